import Foundation
import HDF5
@testable import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// `TaskArithmetic.diff` / `apply` on files (task vectors of sparse fine-tuning): exact task
/// vectors for every float type, α = 1 reproduces the fine-tuned checkpoint bit for bit (same
/// fingerprint), α = 0 the base, --density / --threshold keep the right entries, and bad input fails
/// with one line and no output file.
final class TaskArithmeticTests: ScratchDirectoryTestCase {
    // MARK: - building checkpoints

    /// One tensor: its dtype, shape and values (taken as Double; rounded to the dtype, RNE).
    private struct T {
        var dtype: LocusDType, shape: [Int], values: [Double]
        init(_ dtype: LocusDType, _ shape: [Int], _ values: [Double]) { self.dtype = dtype; self.shape = shape; self.values = values }

        var bytes: [UInt8] {
            switch dtype {
            case .float64: return values.withUnsafeBytes { Array($0) }
            case .float32, .float16, .bfloat16: return values.map { Float($0) }.withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }
            case .int64: return values.map { Int64($0) }.withUnsafeBytes { Array($0) }
            case .int32: return values.map { Int32($0) }.withUnsafeBytes { Array($0) }
            default: fatalError("test helper: \(dtype) not supported")
            }
        }
        /// The value each entry really has after rounding to the dtype.
        var stored: [Double] {
            switch dtype {
            case .float32, .float16, .bfloat16: return bytes.withUnsafeBytes { HalfPrecision.decode($0, dtype: dtype) }.map(Double.init)
            default: return values
            }
        }
    }

    @discardableResult
    private func write(_ name: String, _ tensors: [String: T]) throws -> String {
        let p = path(name)
        let w = try CheckpointWriter(path: p, metadata: ["format": "pt"])
        for (n, t) in tensors.sorted(by: { TensorName.byteOrder($0.key, $1.key) }) {
            try t.bytes.withUnsafeBytes { try w.add(name: n, dtype: t.dtype, shape: t.shape, bytes: $0) }
        }
        _ = try w.finish()
        return p
    }

    private func raw(_ file: String) throws -> [String: [UInt8]] {
        let r = try CheckpointReader(path: file)
        return Dictionary(uniqueKeysWithValues: try r.tensors.map { ($0.name, try r.readRaw($0)) })
    }

    /// Dense τ per tensor as stored in a task vector (× scale).
    private func tau(_ file: String) throws -> [String: (indices: [Int], values: [Double], dtype: LocusDType)] {
        let r = try TaskVectorReader(path: file)
        var out: [String: (indices: [Int], values: [Double], dtype: LocusDType)] = [:]
        for t in r.tensors {
            let (i, v) = try r.readSparse64(t)
            out[t.name] = (i, v.map { $0 * r.scale }, t.dtype)
        }
        return out
    }

    private func expectLocusError(_ mentioning: [String], noFile: String? = nil, _ body: () throws -> Void,
                                  file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected a LocusError mentioning \(mentioning)", file: file, line: line)
        } catch let e as LocusError {
            XCTAssertFalse(e.description.contains("\n"), "one line: \(e)", file: file, line: line)
            for m in mentioning { XCTAssertTrue(e.description.contains(m), "'\(e)' does not mention '\(m)'", file: file, line: line) }
        } catch {
            XCTFail("expected a LocusError, got \(error)", file: file, line: line)
        }
        if let noFile {
            XCTAssertFalse(FileManager.default.fileExists(atPath: noFile), "\(noFile) was written although the command failed", file: file, line: line)
            let left = (try? FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".") }) ?? []
            XCTAssertEqual(left, [], "temporary files left behind", file: file, line: line)
        }
    }

    /// A base and a sparsely changed fine-tuned checkpoint covering every float type, a scalar, an
    /// unchanged tensor, an integer tensor and a float32 tensor whose τ needs float64 to be exact.
    private func pair(seed: UInt64 = 1) throws -> (base: String, ft: String, b: [String: T], f: [String: T]) {
        var rng = LCG(seed)
        func normals(_ n: Int, _ scale: Double = 1) -> [Double] { (0..<n).map { _ in rng.normal() * scale } }
        let b: [String: T] = [
            "layers.0.weight": T(.float32, [6, 5], normals(30)),
            "layers.0.bias": T(.float32, [6], normals(6)),
            "half": T(.float16, [12], normals(12)),
            "brain": T(.bfloat16, [3, 4], normals(12)),
            "double": T(.float64, [5], normals(5)),
            "scalar": T(.float32, [], [0.75]),
            "same": T(.float32, [4], normals(4)),
            "steps": T(.int64, [3], [1, 2, 3]),
            "wide": T(.float32, [3], [1, 3e-30, 7]),
        ]
        var f = b
        func change(_ name: String, _ idx: [Int], _ by: (Double) -> Double) {
            var t = f[name]!
            for i in idx { t.values[i] = by(t.stored[i]) }
            f[name] = t
        }
        change("layers.0.weight", [0, 3, 7, 8, 20, 29]) { $0 + 0.01 * rng.normal() }
        change("layers.0.weight", [11]) { Double(Float($0).nextUp) }        // one ulp
        change("layers.0.weight", [12]) { -$0 }                              // sign flip
        change("layers.0.bias", [2]) { $0 - 0.5 }
        change("half", [0, 5, 11]) { $0 + 0.25 }
        change("brain", [1, 2]) { $0 * 1.5 }
        change("double", [0, 4]) { $0 + 1e-12 }
        change("scalar", [0]) { $0 + 0.125 }
        change("wide", [0]) { _ in 1.5e-5 }                                  // 1.5e-5 − 1 needs 40 bits: float64
        change("wide", [1]) { _ in 1e8 }                                     // rounds to 1e8 in float32 and float64
        let base = try write("base-\(seed).h5", b), ft = try write("ft-\(seed).h5", f)
        return (base, ft, b, f)
    }

    // MARK: - exact diff and apply

    func testDiffIsExactAndApplyReproducesTheFineTunedCheckpointBitForBit() throws {
        let (base, ft, b, f) = try pair()
        let tv = path("tv.h5")
        let s = try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        let floatCount = b.values.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.values.count }
        XCTAssertEqual(s.count, floatCount, "count covers the float tensors")
        let t = try tau(tv)
        XCTAssertNil(t["same"], "an unchanged tensor is absent")
        XCTAssertNil(t["steps"], "integer tensors are not in task vectors")
        var nnz = 0
        for (name, bt) in b where bt.dtype.isFloatingPoint {
            let bs = bt.stored, fs = f[name]!.stored
            let changed = (0..<bs.count).filter { bs[$0] != fs[$0] }
            nnz += changed.count
            guard let e = t[name] else { XCTAssertEqual(changed, [], "\(name) changed but is not in τ"); continue }
            XCTAssertEqual(e.indices, changed, "\(name): indices")
            for (i, v) in zip(e.indices, e.values) { XCTAssertEqual(bs[i] + v, fs[i], "\(name)[\(i)]: base + τ must be the fine-tuned value exactly") }
        }
        XCTAssertEqual(s.nnz, nnz)
        XCTAssertEqual(t["wide"]?.dtype, .float64, "a τ that float32 cannot hold exactly is stored as float64")
        XCTAssertEqual(t["layers.0.weight"]?.dtype, .float32)
        let r = try TaskVectorReader(path: tv)
        XCTAssertEqual(r.baseFingerprint, try CheckpointReader(path: base).fingerprint)
        XCTAssertEqual(r.scale, 1)

        let out = path("applied.h5")
        try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 1, output: out)
        XCTAssertEqual(try raw(out), try raw(ft), "α = 1 reproduces every tensor bit for bit")
        XCTAssertEqual(try CheckpointReader(path: out).fingerprint, try CheckpointReader(path: ft).fingerprint)
        XCTAssertEqual(try CheckpointReader(path: out).computeFingerprint(), try CheckpointReader(path: ft).fingerprint)
        XCTAssertEqual(try CheckpointReader(path: out).metadata(), ["format": "pt"], "metadata comes from the base")

        let zero = path("zero.h5")
        try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 0, output: zero)
        XCTAssertEqual(try raw(zero), try raw(base), "α = 0 reproduces the base")
        XCTAssertEqual(try CheckpointReader(path: zero).fingerprint, try CheckpointReader(path: base).fingerprint)

        // α = 0.5: float64 arithmetic, rounded once to float32.
        let half = path("half.h5")
        try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 0.5, output: half)
        let h = try CheckpointReader(path: half)
        let w = try h.readFloat64(h.tensor(named: "layers.0.weight")!)
        let bw = b["layers.0.weight"]!.stored, fw = f["layers.0.weight"]!.stored
        for i in 0..<w.count { XCTAssertEqual(w[i], Double(Float(bw[i] + 0.5 * (fw[i] - bw[i]))), "α = 0.5 at \(i)") }
    }

    /// A frozen −0.0 that comes back as +0.0 (what the multiplier path of the sparse optimizers does, see
    /// SparseFinetuneTests) changes the fine-tuned fingerprint but not any value: diff drops it (τ = 0) and
    /// apply then cannot reproduce the fine-tuned checkpoint bit for bit.
    func testSignedZeroChangeSurvivesDiffAndApply() throws {
        let base = try write("b0.h5", ["w": T(.float32, [4], [-0.0, 1, 2, -0.0])])
        let ft = try write("f0.h5", ["w": T(.float32, [4], [0.0, 1, 2.5, -0.0])])
        let tv = path("tv0.h5"), out = path("out0.h5")
        try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        try TaskArithmetic.apply(base: base, taskVector: tv, output: out)
        XCTAssertEqual(try raw(out)["w"], try raw(ft)["w"], "α = 1 must reproduce the fine-tuned bits, −0.0 → +0.0 included")
        XCTAssertEqual(try CheckpointReader(path: out).fingerprint, try CheckpointReader(path: ft).fingerprint)
    }

    /// τ = θ_ft − θ_base is computed in float64, which is exact only while the two values are within
    /// ~2^29 of each other in magnitude. A weight that shrinks from 1e8 to 1e-30 (or from 1 to 1e-10)
    /// loses θ_ft in the subtraction, so apply cannot give it back; diff should notice (it checks only
    /// float32 vs float64) and say so instead of silently writing an inexact τ.
    func testDiffOfAWeightThatShrinksByFarIsExactOrRefused() throws {
        let base = try write("sb.h5", ["w": T(.float32, [3], [1e8, 1, 0.5])])
        let ft = try write("sf.h5", ["w": T(.float32, [3], [1e-30, 1e-10, 0.25])])
        let tv = path("s-tv.h5"), out = path("s-out.h5")
        do {
            try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        } catch let e as LocusError {
            XCTAssertFalse(e.description.contains("\n")); return   // refusing with one line is acceptable
        }
        try TaskArithmetic.apply(base: base, taskVector: tv, output: out)
        XCTAssertEqual(try raw(out)["w"], try raw(ft)["w"], "diff claims exactness: base + τ must give back 1e-30 and 1e-10")
    }

    // MARK: - sparsification

    /// Independent model of --density: over every float tensor (tensors in name order, C order inside),
    /// keep the ⌊d·n⌋ entries of largest |τ|, ties by position; zeros are never stored.
    private func expectedDensity(_ taus: [(String, [Double])], density: Double) -> [String: [Int]] {
        let n = taus.reduce(0) { $0 + $1.1.count }
        let k = Int(density * Double(n))
        var all: [(mag: Double, pos: Int, name: String, i: Int)] = []
        var pos = 0
        for (name, v) in taus { for (i, x) in v.enumerated() { all.append((abs(x), pos, name, i)); pos += 1 } }
        all.sort { $0.mag != $1.mag ? $0.mag > $1.mag : $0.pos < $1.pos }
        var out: [String: [Int]] = [:]
        for e in all.prefix(k) where e.mag != 0 { out[e.name, default: []].append(e.i) }
        return out.mapValues { $0.sorted() }
    }

    func testDensityAndThresholdKeepTheRightEntries() throws {
        // τ with ties across and inside tensors, exact in float32.
        let tb: [String: [Double]] = ["a": [0, 0, 0, 0, 0, 0, 0, 0], "b.w": [0, 0, 0, 0, 0, 0], "c": [0, 0, 0, 0]]
        let tf: [String: [Double]] = ["a": [0.5, -0.25, 0, 1, -1, 0.125, 0.5, 0], "b.w": [-0.5, 0.5, 2, 0, 0.25, -0.125], "c": [1, 0, -0.5, 0.0625]]
        let base = try write("db.h5", tb.mapValues { T(.float32, [$0.count], $0) })
        let ft = try write("df.h5", tf.mapValues { T(.float32, [$0.count], $0) })
        let taus = tf.keys.sorted { TensorName.byteOrder($0, $1) }.map { ($0, zip(tf[$0]!, tb[$0]!).map { $0 - $1 }) }
        for d in [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0] {
            let tv = path("d\(d).h5")
            let s = try TaskArithmetic.diff(base: base, finetuned: ft, output: tv, sparsify: .density(d))
            let got = try tau(tv).mapValues(\.indices)
            let want = expectedDensity(taus, density: d)
            XCTAssertEqual(got, want, "--density \(d)")
            XCTAssertEqual(s.nnz, want.values.reduce(0) { $0 + $1.count })
        }
        for th in [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0] {
            let tv = path("t\(th).h5")
            try TaskArithmetic.diff(base: base, finetuned: ft, output: tv, sparsify: .threshold(th))
            let got = try tau(tv)
            for (name, v) in taus {
                let want = v.indices.filter { abs(v[$0]) >= th && v[$0] != 0 }
                XCTAssertEqual(got[name]?.indices ?? [], want, "--threshold \(th): \(name)")
                if let g = got[name] { XCTAssertEqual(g.values, want.map { v[$0] }, "--threshold \(th): \(name) values") }
            }
        }
    }

    // MARK: - streaming in blocks

    /// What a task vector stores, tensor by tensor: metadata, entries and each dataset's digest.
    private func contents(_ file: String) throws -> [String] {
        let r = try TaskVectorReader(path: file)
        return try r.tensors.map { t in
            let (i, v) = try r.readSparse64(t)
            let g = try r.group.openGroup(t.link)
            let digests = try ["values", "indices", "mask"].filter { g.kind(of: $0) == .dataset }.map { try g.openDataset($0).stringAttribute("digest") }
            return "\(t.name) \(t.shape) \(t.encoding) \(t.dtype) nnz=\(t.nnz) l2=\(t.l2Norm.bitPattern) \(i) \(v.map(\.bitPattern)) \(digests)"
        }
    }

    /// Blocks of 1, 2, 3, 7 and 64 entries (a range ending inside a mask byte, a row split from
    /// the next) write the same task vector as one block per tensor, for every sparsification and
    /// every encoding; apply in small blocks writes the same checkpoint.
    func testSmallBlocksWriteTheSameFilesAsOneBlock() throws {
        var rng = LCG(7)
        // bitmask (≈ 1/3 changed), coo (≈ 2 % changed), dense (all changed, rank 2), float16 / float64 / scalar.
        var b: [String: T] = [:], f: [String: T] = [:]
        let n = 1003
        b["mask.w"] = T(.float32, [n], (0..<n).map { _ in rng.normal() })
        b["coo.w"] = T(.float32, [17, 59], (0..<(17 * 59)).map { _ in rng.normal() })
        b["dense.w"] = T(.float32, [9, 13], (0..<117).map { _ in rng.normal() })
        b["half"] = T(.float16, [40], (0..<40).map { _ in rng.normal() })
        b["double"] = T(.float64, [5, 3], (0..<15).map { _ in rng.normal() })
        b["scalar"] = T(.float32, [], [0.5])
        f = b
        f["mask.w"]!.values = b["mask.w"]!.stored.enumerated().map { $0.offset % 3 == 1 ? $0.element + 0.25 * rng.normal() : $0.element }
        f["coo.w"]!.values = b["coo.w"]!.stored.enumerated().map { $0.offset % 50 == 7 ? $0.element * 1.5 : $0.element }
        f["dense.w"]!.values = b["dense.w"]!.stored.map { $0 + 0.125 }
        f["half"]!.values = b["half"]!.stored.enumerated().map { $0.offset % 4 == 0 ? $0.element + 0.5 : $0.element }
        f["double"]!.values = b["double"]!.stored.map { $0 + 1e-13 }
        f["scalar"]!.values = [0.75]
        let base = try write("sb.h5", b), ft = try write("sf.h5", f)
        for sparsify in [TaskArithmetic.Sparsify.none, .density(0.1), .density(0.37), .threshold(0.2)] {
            let whole = path("whole.h5")
            try? FileManager.default.removeItem(atPath: whole)
            try TaskArithmetic.diff(base: base, finetuned: ft, output: whole, sparsify: sparsify)
            let want = try contents(whole)
            XCTAssertTrue(want.contains { $0.contains(" bitmask ") } || sparsify != .none, "the case covers the bitmask encoding")
            for (elements, limit) in [(1, 1), (2, 5), (3, 1 << 22), (7, 2), (64, 100)] {
                let tv = path("blocks-\(elements).h5")
                try? FileManager.default.removeItem(atPath: tv)
                try TaskArithmetic.diff(base: base, finetuned: ft, output: tv, sparsify: sparsify, blockElements: elements, collectLimit: limit)
                XCTAssertEqual(try contents(tv), want, "\(sparsify) in blocks of \(elements), collecting ≤ \(limit) keys")
            }
        }
        let tv = path("tv.h5"), whole = path("applied.h5")
        try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 0.7, output: whole)
        for elements in [1, 3, 64] {
            let out = path("applied-\(elements).h5")
            try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 0.7, output: out, blockElements: elements)
            XCTAssertEqual(try raw(out), try raw(whole), "apply in blocks of \(elements)")
        }
        let back = path("back.h5")
        try TaskArithmetic.apply(base: base, taskVector: tv, output: back, blockElements: 5)
        XCTAssertEqual(try raw(back), try raw(ft), "α = 1 in blocks reproduces the fine-tuned checkpoint")
    }

    /// The radix select of --density against a sort of every |τ|: many ties (quantized values),
    /// zeros and signed zeros, with candidate limits that force one, two and four histogram passes.
    func testDensitySelectionMatchesASortWithTies() throws {
        var rng = LCG(11)
        var tb: [String: [Double]] = [:], tf: [String: [Double]] = [:]
        for (name, count) in [("a", 300), ("b.w", 257), ("c", 64)] {
            tb[name] = (0..<count).map { _ in Double(Int(rng.unit() * 8)) / 4 }
            tf[name] = tb[name]!.map { x in
                let u = rng.unit()
                return u < 0.2 ? x : (u < 0.25 ? -x : x + Double(Int(rng.unit() * 9) - 4) / 8)
            }
        }
        let base = try write("rb.h5", tb.mapValues { T(.float32, [$0.count], $0) })
        let ft = try write("rf.h5", tf.mapValues { T(.float32, [$0.count], $0) })
        let taus = tf.keys.sorted { TensorName.byteOrder($0, $1) }.map { ($0, zip(tf[$0]!, tb[$0]!).map { $0 - $1 }) }
        for d in [0.001, 0.05, 0.3, 0.5, 0.77, 1.0] {
            let want = expectedDensity(taus, density: d)
            for limit in [1, 40, 1 << 22] {
                let tv = path("r\(d)-\(limit).h5")
                try TaskArithmetic.diff(base: base, finetuned: ft, output: tv, sparsify: .density(d), blockElements: 50, collectLimit: limit)
                XCTAssertEqual(try tau(tv).mapValues(\.indices), want, "--density \(d), collecting ≤ \(limit) keys")
            }
        }
    }

    // MARK: - bad input

    func testDiffRefusesCheckpointsWithDifferentTensors() throws {
        let base = try write("lb.h5", ["a": T(.float32, [3], [1, 2, 3]), "b": T(.float32, [2], [1, 2]), "c": T(.float32, [2], [1, 2])])
        let cases: [(String, [String: T], [String])] = [
            ("missing", ["a": T(.float32, [3], [1, 2, 3]), "b": T(.float32, [2], [1, 2])], ["'c'"]),
            ("extra", ["a": T(.float32, [3], [1, 2, 3]), "b": T(.float32, [2], [1, 2]), "c": T(.float32, [2], [1, 2]), "d": T(.float32, [1], [0])], ["'d'"]),
            ("shape", ["a": T(.float32, [1, 3], [1, 2, 3]), "b": T(.float32, [2], [1, 2]), "c": T(.float32, [2], [1, 2])], ["'a'", "[1, 3]"]),
            ("dtype", ["a": T(.float32, [3], [1, 2, 3]), "b": T(.float64, [2], [1, 2]), "c": T(.float32, [2], [1, 2])], ["'b'", "float64"]),
        ]
        for (label, tensors, mention) in cases {
            let ft = try write("l-\(label).h5", tensors), out = path("l-\(label)-tv.h5")
            expectLocusError(mention, noFile: out) { try TaskArithmetic.diff(base: base, finetuned: ft, output: out) }
        }
        // An integer tensor that differs cannot be expressed as a task vector.
        let ib = try write("ib.h5", ["a": T(.float32, [1], [1]), "n": T(.int32, [2], [1, 2])])
        let iff = try write("if.h5", ["a": T(.float32, [1], [2]), "n": T(.int32, [2], [1, 3])])
        expectLocusError(["int32"], noFile: path("i-tv.h5")) { try TaskArithmetic.diff(base: ib, finetuned: iff, output: self.path("i-tv.h5")) }
        // Bad sparsification parameters.
        let (b2, f2, _, _) = try pair(seed: 3)
        for s in [TaskArithmetic.Sparsify.density(0), .density(1.5), .density(-0.1), .threshold(-1)] {
            LocusTestSupport.expectError(RequestError.self) { try TaskArithmetic.diff(base: b2, finetuned: f2, output: self.path("s-tv.h5"), sparsify: s) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: path("s-tv.h5")))
        }
    }

    func testDiffRefusesNonFiniteFineTunedValues() throws {
        let base = try write("nb.h5", ["w": T(.float32, [3], [1, 2, 3])])
        let ft = try write("nf.h5", ["w": T(.float32, [3], [1, .nan, .infinity])])
        expectLocusError(["w"], noFile: path("n-tv.h5")) { try TaskArithmetic.diff(base: base, finetuned: ft, output: self.path("n-tv.h5")) }
    }

    func testApplyRefusesATaskVectorOfAnotherBaseUnlessForced() throws {
        let (base, ft, b, _) = try pair(seed: 5)
        let tv = path("tv5.h5")
        try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        // Another base with the same layout (one value differs).
        var other = b
        other["layers.0.bias"]!.values[0] += 1
        let otherBase = try write("other.h5", other)
        let out = path("o.h5")
        let refused = LocusTestSupport.expectError(RemediableError.self, mentioning: [tv, "base-fingerprint"]) {
            try TaskArithmetic.apply(base: otherBase, taskVector: tv, output: out)
        }
        XCTAssertEqual(refused?.remedy, .use(setting: "force", purpose: "apply it anyway"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        var warnings: [String] = []
        try TaskArithmetic.apply(base: otherBase, taskVector: tv, output: out, force: true, warn: { warnings.append($0) })
        XCTAssertEqual(warnings.count, 1, "--force warns once")
        XCTAssertTrue(warnings.first?.contains(tv) ?? false)
        let o = try CheckpointReader(path: out)
        let got = try o.readFloat32(o.tensor(named: "layers.0.bias")!)
        let t = try tau(tv)["layers.0.bias"]!
        var want = other["layers.0.bias"]!.stored
        for (i, v) in zip(t.indices, t.values) { want[i] += v }
        XCTAssertEqual(got, want.map { Float($0) })
        // A task vector naming a tensor the base lacks, or another shape, is refused even with --force.
        let small = try write("small.h5", ["layers.0.weight": T(.float32, [6, 5], [Double](repeating: 0, count: 30))])
        expectLocusError(["not in the base"], noFile: path("s.h5")) {
            try TaskArithmetic.apply(base: small, taskVector: tv, output: self.path("s.h5"), force: true)
        }
    }

    /// A non-finite α is refused, and so is a result that overflows the tensor's dtype: α·τ = 1e298 is
    /// finite in float64 but +inf once rounded to float32.
    func testApplyRefusesNonFiniteResults() throws {
        let (base, ft, _, _) = try pair(seed: 7)
        let tv = path("tv7.h5")
        try TaskArithmetic.diff(base: base, finetuned: ft, output: tv)
        let e = LocusTestSupport.expectError(RequestError.self) { try TaskArithmetic.apply(base: base, taskVector: tv, alpha: .nan, output: self.path("a.h5")) }
        XCTAssertEqual(e?.setting, "alpha")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("a.h5")))
        expectLocusError(["not finite"], noFile: path("big64.h5")) { try TaskArithmetic.apply(base: base, taskVector: tv, alpha: .greatestFiniteMagnitude, output: self.path("big64.h5")) }
        let out = path("big.h5")
        do {
            try TaskArithmetic.apply(base: base, taskVector: tv, alpha: 1e300, output: out)
            let r = try CheckpointReader(path: out)
            let bad = try r.tensors.filter { $0.dtype != .int64 }.filter { try r.readFloat64($0).contains { !$0.isFinite } }.map(\.name)
            XCTFail("apply --alpha 1e300 wrote non-finite values into \(bad) instead of failing")
        } catch let e as LocusError {
            XCTAssertTrue(e.description.contains("not finite"), "\(e)")
        }
    }
}

/// A tiny deterministic generator (the merge tests do not depend on LocusEngine's).
private struct LCG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double {
        let u1 = max(unit(), 1e-12), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}
