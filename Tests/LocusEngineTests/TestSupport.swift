import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusEngine

// MARK: - random data (deterministic)

/// A seeded generator for test data (Locus's own SplitMix64, so failures reproduce bit for bit).
struct TestRandom {
    var rng: SplitMix64
    init(_ seed: UInt64) { rng = SplitMix64(seed: seed ^ 0x7E57_7E57) }
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float { rng.uniform(lo, hi) }
    /// Standard normal (Box–Muller, in Double).
    mutating func normal() -> Float {
        let u1 = max(Double(rng.unitFloat()), 1e-12), u2 = Double(rng.unitFloat())
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
    mutating func tensor(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in uniform(lo, hi) })
    }
    mutating func normalTensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in normal() * scale })
    }
    /// Values whose magnitude is at least `gap` (keeps ReLU inputs away from the kink).
    mutating func awayFromZero(_ shape: [Int], gap: Float = 0.1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in
            let m = uniform(gap, 1.5); return rng.below(2) == 0 ? m : -m
        })
    }
    /// Distinct values spaced `spacing` apart in random order (no ties anywhere: max pooling's argmax is stable).
    mutating func distinct(_ shape: [Int], spacing: Float = 0.05) -> Tensor {
        let n = shape.reduce(1, *)
        let p = rng.permutation(n)
        return Tensor(shape: shape, data: p.map { (Float($0) - Float(n) / 2) * spacing })
    }
    mutating func scales(_ n: Int) -> [Float] {
        // A mix of exact zeros, TaLoS's 0.1, ones and arbitrary values.
        (0..<n).map { i in [0, 0.1, 1, 2.5, uniform(0.2, 1.8)][(i + rng.below(5)) % 5] }
    }
    mutating func below(_ n: Int) -> Int { rng.below(n) }
}

// MARK: - comparisons

/// max |a − b| / max(max |b|, floor): the error relative to the size of the reference.
func normalizedError(_ a: [Float], _ b: [Double], floor: Double = 1e-12) -> Double {
    precondition(a.count == b.count, "normalizedError: \(a.count) vs \(b.count) values")
    var num = 0.0, den = floor
    for (x, y) in zip(a, b) { num = max(num, abs(Double(x) - y)); den = max(den, abs(y)) }
    return num / den
}
func normalizedError(_ a: [Float], _ b: [Float]) -> Double { normalizedError(a, b.map(Double.init)) }

func assertClose(_ a: [Float], _ b: [Double], tol: Double, _ what: @autoclosure () -> String,
                 file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else {
        XCTFail("\(what()): \(a.count) values vs \(b.count) expected", file: file, line: line); return
    }
    let e = normalizedError(a, b)
    XCTAssertLessThanOrEqual(e, tol, "\(what()): normalized max error \(e) > \(tol)", file: file, line: line)
}

/// Bit-for-bit equality of float arrays (NaN-safe, −0 ≠ +0).
func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

// MARK: - finite differences

/// The scalar objective f = Σ y ⊙ R, accumulated in Double.
func objective(_ y: Tensor, _ r: Tensor) -> Double {
    precondition(y.shape == r.shape, "objective: \(y.shape) vs \(r.shape)")
    var s = 0.0
    for i in 0..<y.count { s += Double(y.data[i]) * Double(r.data[i]) }
    return s
}

struct GradientCheckResult {
    var inputError: Double?
    var parameterErrors: [String: Double] = [:]
    var worst: Double { ([inputError ?? 0] + Array(parameterErrors.values)).max() ?? 0 }
}

/// Compares a layer's analytic gradients (input and every parameter) of f = Σ layer(x) ⊙ R with
/// central differences: each coordinate is moved by ±h in Float, the forward pass re-run and f
/// evaluated in Double; the step actually taken (after Float rounding) is the denominator.
/// Also checks that a second backward accumulates (parameter gradients double).
@discardableResult
func gradientCheck(_ layer: any Layer, input x: Tensor, seed: UInt64, h: Float = 1e-2, tol: Double = 1e-3,
                   mode: Mode = .train, checkInput: Bool = true, label: String,
                   file: StaticString = #filePath, line: UInt = #line) -> GradientCheckResult {
    var rnd = TestRandom(seed)
    let y0 = layer.forward(x, mode: mode)
    let r = rnd.tensor(y0.shape)
    layer.parameters.forEach { $0.zeroGrad() }
    let gx = layer.backward(r)
    XCTAssertEqual(gx.shape, x.shape, "\(label): input gradient shape", file: file, line: line)
    let analytic = layer.parameters.map { $0.grad.data }
    var result = GradientCheckResult()

    func f() -> Double { objective(layer.forward(x, mode: mode), r) }
    if checkInput {
        var num = [Double](repeating: 0, count: x.count)
        var xp = x
        for i in 0..<x.count {
            let v = x.data[i]
            xp.data[i] = v + h; let up = Double(xp.data[i]); let fp = objective(layer.forward(xp, mode: mode), r)
            xp.data[i] = v - h; let dn = Double(xp.data[i]); let fm = objective(layer.forward(xp, mode: mode), r)
            xp.data[i] = v
            num[i] = (fp - fm) / (up - dn)
        }
        let e = normalizedError(gx.data, num)
        result.inputError = e
        XCTAssertLessThanOrEqual(e, tol, "\(label): input gradient vs central differences: normalized error \(e)", file: file, line: line)
    }
    for (k, p) in layer.parameters.enumerated() {
        var num = [Double](repeating: 0, count: p.value.count)
        for i in 0..<p.value.count {
            let v = p.value.data[i]
            p.value.data[i] = v + h; let up = Double(p.value.data[i]); let fp = f()
            p.value.data[i] = v - h; let dn = Double(p.value.data[i]); let fm = f()
            p.value.data[i] = v
            num[i] = (fp - fm) / (up - dn)
        }
        let e = normalizedError(analytic[k], num)
        result.parameterErrors[p.name] = e
        XCTAssertLessThanOrEqual(e, tol, "\(label): \(p.name) gradient vs central differences: normalized error \(e)", file: file, line: line)
    }
    // Gradients accumulate: a second backward (after the same forward) adds the same amount again.
    if !layer.parameters.isEmpty {
        _ = layer.forward(x, mode: mode)
        layer.parameters.forEach { $0.zeroGrad() }
        _ = layer.backward(r)
        let once = layer.parameters.map { $0.grad.data }
        _ = layer.backward(r)
        for (p, g1) in zip(layer.parameters, once) {
            let e = normalizedError(p.grad.data, g1.map { 2 * Double($0) })
            XCTAssertLessThanOrEqual(e, 1e-6, "\(label): \(p.name): a second backward must accumulate (+=)", file: file, line: line)
        }
    }
    return result
}

// MARK: - files and processes

class EngineTestCase: ScratchDirectoryTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        try BLAS.ensureLoaded()
    }

    /// Requires `body` to throw an EngineError whose text contains every string of `mentioning`.
    @discardableResult
    func expectEngineError(_ mentioning: [String], _ body: () throws -> Void,
                           file: StaticString = #filePath, line: UInt = #line) -> EngineError? {
        LocusTestSupport.expectError(EngineError.self, mentioning: mentioning, file: file, line: line, body)
    }

    /// Requires `body` to throw a LocusError whose text contains every string of `mentioning`.
    @discardableResult
    func expectLocusError(_ mentioning: [String], _ body: () throws -> Void,
                          file: StaticString = #filePath, line: UInt = #line) -> LocusError? {
        LocusTestSupport.expectError(LocusError.self, mentioning: mentioning, file: file, line: line, body)
    }

    struct ProcessResult { var status: Int32; var output: String }

    /// Runs a command with output to a file (never a pipe that could fill up).
    func run(_ arguments: [String]) throws -> ProcessResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = path("process-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try handle.close()
        return ProcessResult(status: process.terminationStatus, output: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    /// Skips (with the reason) unless `python3 -c "import <modules>"` works.
    func requirePython(_ modules: String, hint: String) throws {
        let r = try? run(["python3", "-c", "import \(modules)"])
        guard let r, r.status == 0 else {
            throw XCTSkip("\(hint): python3 cannot `import \(modules)` (\(r?.output.split(separator: "\n").last.map(String.init) ?? "python3 not found"))")
        }
    }
}

// MARK: - in-memory datasets

/// A linearly separable dataset: class c's samples cluster around a random centre, well apart.
func separableData(samples: Int, features: Int, classes: Int, seed: UInt64, trainFraction: Double = 1) -> LabelledData {
    var rnd = TestRandom(seed)
    let centres = (0..<classes).map { _ in (0..<features).map { _ in rnd.uniform(-2, 2) } }
    var x: [Float] = [], y: [Int64] = []
    for i in 0..<samples {
        let c = i % classes
        y.append(Int64(c))
        x += centres[c].map { $0 + 0.15 * rnd.normal() }
    }
    let nTrain = Int(Double(samples) * trainFraction)
    var splits = ["train": Array(0..<nTrain)]
    if nTrain < samples { splits["val"] = Array(nTrain..<samples) }
    return LabelledData(inputs: .float32(x), shape: [samples, features], labels: y,
                        classes: (0..<classes).map { "c\($0)" }, splits: splits)
}
