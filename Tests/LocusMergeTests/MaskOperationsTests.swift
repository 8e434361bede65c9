import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// The pieces `locus mask --from-task-vector` and `mask-set` are made of, without the CLI.
final class MaskOperationsTests: ScratchDirectoryTestCase {
    /// The radix select gives the k-th largest key and its ties as a sort does, whether it sorts at
    /// once or narrows the candidates 16 bits at a time first (collect limit 1).
    func testRadixSelectAgreesWithSorting() throws {
        var g = SplitMix64(seed: 42)
        // Few distinct values (many ties), zeros given in runs, keys spread over the whole range.
        let keys: [UInt64] = (0..<5000).map { _ in
            switch g.below(4) { case 0: 0; case 1: Double(g.below(7)).bitPattern; default: g.unitDouble().bitPattern }
        }
        let sorted = keys.sorted(by: >)
        for k in [1, 2, 17, 1000, 2500, 4999, 5000] {
            for limit in [1, 1 << 22] {
                let (key, ties) = try RadixSelect.kthLargest(k, of: keys.count, collectLimit: limit) { body, zeros in
                    var run = 0
                    for x in keys {
                        if x == 0 { run += 1; continue }
                        if run > 0 { zeros(run); run = 0 }
                        body(x)
                    }
                    if run > 0 { zeros(run) }
                }
                XCTAssertEqual(key, sorted[k - 1], "k = \(k), limit \(limit)")
                XCTAssertEqual(ties, k - sorted.prefix { $0 > key }.count, "k = \(k), limit \(limit)")
            }
        }
    }

    /// Intersection of a mask with its own complement is empty; union is everything; the output
    /// carries the base fingerprint and the inputs' fingerprints.
    func testSetOperationsOnComplementaryMasks() throws {
        let fp = someFingerprint
        let bits = (0..<37).map { $0 % 3 == 0 }
        for (name, b) in [("a.h5", bits), ("b.h5", bits.map { !$0 })] {
            let w = try MaskWriter(path: path(name), baseFingerprint: fp)
            try w.add(name: "w", shape: [37], bits: b)
            try w.finish()
        }
        let both = try MaskOperations.combine(.union, inputs: [path("a.h5"), path("b.h5")], output: path("u.h5"))
        XCTAssertEqual(both, MaskOperations.Summary(tensors: 1, count: 37, ones: 37))
        let none = try MaskOperations.combine(.intersection, inputs: [path("a.h5"), path("b.h5")], output: path("i.h5"))
        XCTAssertEqual(none.ones, 0)
        let diff = try MaskOperations.combine(.difference, inputs: [path("a.h5"), path("b.h5")], output: path("d.h5"))
        XCTAssertEqual(diff.ones, bits.filter { $0 }.count)
        let r = try MaskReader(path: path("d.h5"))
        XCTAssertEqual(r.baseFingerprint, fp)
        XCTAssertEqual(try r.read(r.tensors[0]), bits)
        XCTAssertEqual(r.artifact.header.provenance?.inputs.map(\.fingerprint),
                       [try MaskReader(path: path("a.h5")).fingerprint(), try MaskReader(path: path("b.h5")).fingerprint()])
        expectError(LocusError.self, mentioning: [path("o.h5")]) {
            try MaskOperations.combine(.union, inputs: [path("a.h5")], output: path("o.h5"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o.h5")))
    }
}
