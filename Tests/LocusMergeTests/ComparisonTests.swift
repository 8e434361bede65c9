import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// `Comparison` on hand-made masks and task vectors whose overlap is known by construction.
final class ComparisonTests: XCTestCase {
    func testMaskOverlapAndTaskVectorConflictsByHand() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ComparisonTests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = "sha256:" + String(repeating: "0", count: 64)
        // a = {0, 1, 2, 9}, b = {1, 2, 3} (10 entries): |a ∩ b| = 2, |a ∪ b| = 5.
        for (name, bits) in [("a", [0, 1, 2, 9]), ("b", [1, 2, 3])] {
            let w = try MaskWriter(path: "\(dir)/\(name).h5", baseFingerprint: base)
            try w.add(name: "w", shape: [10], bits: (0..<10).map { bits.contains($0) })
            try w.finish()
        }
        let m = try Comparison.masks(["\(dir)/a.h5", "\(dir)/b.h5"])
        XCTAssertEqual(m.intersections, [[4, 2], [2, 3]])
        XCTAssertEqual(m.jaccard[0][1], 0.4)
        XCTAssertEqual(m.selectedBy, [5, 3, 2])   // by none: 4…8; by one: 0, 3, 9; by both: 1, 2
        // τ₁ = (1, −2, 0), τ₂ = (3, 4, 0) × scale 0.5: one conflict (entry 1) of two shared entries.
        for (name, values, scale) in [("t1", [1.0, -2, 0], 1.0), ("t2", [3.0, 4, 0], 0.5)] {
            let w = try TaskVectorWriter(path: "\(dir)/\(name).h5", baseFingerprint: base, scale: scale)
            try w.add(name: "w", shape: [3], dense: values.map(Float.init))
            try w.finish()
        }
        let t = try Comparison.taskVectors(["\(dir)/t1.h5", "\(dir)/t2.h5"])
        XCTAssertEqual(t.overlap, 2)
        XCTAssertEqual(t.signConflicts, 1)
        XCTAssertEqual(t.norms[0], 5.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(t.norms[1], 2.5, accuracy: 1e-15)
        XCTAssertEqual(t.cosine[0][1], (1.5 - 4) / (5.0.squareRoot() * 2.5), accuracy: 1e-15)
    }
}
