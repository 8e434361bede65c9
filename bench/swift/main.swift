// locus-bench: micro-benchmarks of the engine that need no dataset.
//   locus-bench gemm [N] [repeats]   sgemm N×N×N through LocusEngine's BLAS; prints one JSON line
import Foundation
import LocusEngine

func gemmBench(n: Int, repeats: Int) throws {
    try BLAS.ensureLoaded()
    var rng = SeededRandom(seed: 1)
    let a = (0..<(n * n)).map { _ in rng.uniform(-1, 1) }
    let b = (0..<(n * n)).map { _ in rng.uniform(-1, 1) }
    var c = [Float](repeating: 0, count: n * n)
    func once() -> Double {
        let t = Date()
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            BLAS.gemm(m: n, n: n, k: n, a: ap.baseAddress!, lda: n, b: bp.baseAddress!, ldb: n, c: cp.baseAddress!, ldc: n)
        } } }
        return Date().timeIntervalSince(t)
    }
    _ = once()   // warm-up: thread start-up and page faults
    let best = (0..<repeats).map { _ in once() }.min()!
    let gflops = 2 * Double(n) * Double(n) * Double(n) / best / 1e9
    let env = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? ""
    print("{\"n\": \(n), \"seconds\": \(best), \"gflops\": \(gflops), \"core\": \"\(BLAS.core)\", \"chosen_by_locus\": \"\(BLAS.coreChosenByLocus)\", \"env_coretype\": \"\(env)\", \"threads\": \(BLAS.threads)}")
}

let args = CommandLine.arguments
switch args.dropFirst().first {
case "gemm":
    try gemmBench(n: args.count > 2 ? Int(args[2])! : 2048, repeats: args.count > 3 ? Int(args[3])! : 5)
default:
    FileHandle.standardError.write("usage: locus-bench gemm [N] [repeats]\n".data(using: .utf8)!)
    exit(2)
}
