import CBLAS
import Dispatch

/// Matrix products through OpenBLAS (loaded at run time; see CBLAS/include/locus_blas.h for why).
public enum BLAS {
    /// Loads OpenBLAS; call before any product so a missing library is a clear error, not a crash.
    public static func ensureLoaded() throws {
        _ = keepFreedMemory
        var buffer = [CChar](repeating: 0, count: 512)
        if locus_blas_load(&buffer, buffer.count) != 0 {
            throw EngineError(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    /// Once per process: large freed blocks stay with malloc for reuse (see locus_keep_freed_memory).
    private static let keepFreedMemory: Void = { _ = locus_keep_freed_memory() }()

    /// The OpenBLAS kernel in use (e.g. "SkylakeX").
    public static var core: String { String(cString: locus_blas_core()) }
    /// The OPENBLAS_CORETYPE Locus chose, or "" when the environment already had one (or the CPU is unknown).
    public static var coreChosenByLocus: String { String(cString: locus_blas_core_chosen()) }
    public static var threads: Int { Int(locus_blas_threads()) }
    public static func setThreads(_ n: Int) { locus_blas_set_threads(Int32(n)) }

    /// Runs `body` over [0, n) in two halves on two threads, each calling single-threaded BLAS,
    /// when BLAS has more than one thread: for many small products (attention's per-head T×T
    /// products), where OpenBLAS's own threading spends more on synchronising than it saves.
    /// `body` gets the half's index (0 or 1), for per-half scratch. The split depends only on n.
    public static func inTwoHalves(_ n: Int, _ body: (_ half: Int, _ range: Range<Int>) -> Void) {
        let saved = threads
        guard saved > 1, n > 1 else { body(0, 0..<n); return }
        setThreads(1)
        defer { setThreads(saved) }
        struct Box: @unchecked Sendable { let body: (Int, Range<Int>) -> Void }   // halves touch disjoint data
        withoutActuallyEscaping(body) { body in
            let box = Box(body: body)
            DispatchQueue.concurrentPerform(iterations: 2) { k in box.body(k, k == 0 ? 0..<(n / 2) : (n / 2)..<n) }
        }
    }

    /// Row-major C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
    @inline(__always)
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {   // BLAS leaves C alone only when beta == 1; make the empty sum explicit
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        locus_sgemm(transA ? Int32(LOCUS_BLAS_TRANS) : Int32(LOCUS_BLAS_NO_TRANS), transB ? Int32(LOCUS_BLAS_TRANS) : Int32(LOCUS_BLAS_NO_TRANS),
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

/// An engine failure a user can act on (shape mismatch, bad architecture, NaN loss).
public struct EngineError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}
