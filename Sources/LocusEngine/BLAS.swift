import CBLAS
import LocusKernels

/// Matrix products through OpenBLAS (loaded at run time; see CBLAS/include/locus_blas.h for why),
/// single-threaded inside and split across the engine's one thread pool (`Parallel`,
/// LocusKernels/include/locus_kernels.h): OpenBLAS's own threads spun between products and competed
/// with the element-wise work for the cores.
public enum BLAS {
    /// Loads OpenBLAS; call before any product so a missing library is a clear error, not a crash.
    public static func ensureLoaded() throws {
        _ = keepFreedMemory
        var buffer = [CChar](repeating: 0, count: 512)
        if locus_blas_load(&buffer, buffer.count) != 0 {
            throw EngineError(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        _ = singleThreadedBLAS
    }

    /// Once per process: OpenBLAS computes each part on the thread that asks; the pool provides the threads.
    private static let singleThreadedBLAS: Void = { locus_blas_set_threads(1) }()

    /// Once per process: large freed blocks stay with malloc for reuse (see locus_keep_freed_memory).
    private static let keepFreedMemory: Void = { _ = locus_keep_freed_memory() }()

    /// The OpenBLAS kernel in use (e.g. "SkylakeX").
    public static var core: String { String(cString: locus_blas_core()) }
    /// The OPENBLAS_CORETYPE Locus chose, or "" when the environment already had one (or the CPU is unknown).
    public static var coreChosenByLocus: String { String(cString: locus_blas_core_chosen()) }
    /// Threads of the engine's pool (products and element-wise work alike), the caller included.
    public static var threads: Int { Int(locus_pool_threads()) }
    /// Sets the pool's size; 1 runs everything on the calling thread (the results are the same: splits
    /// depend on shapes, not on threads).
    public static func setThreads(_ n: Int) { locus_pool_set_threads(Int32(n)) }

    /// Runs `body` over [0, n) in two halves on the pool, each part's products single-threaded:
    /// for many small products (attention's per-head T×T products), where splitting each product
    /// costs more than it saves. `body` gets the half's index (0 or 1), for per-half scratch. The split
    /// depends only on n.
    public static func inTwoHalves(_ n: Int, _ body: (_ half: Int, _ range: Range<Int>) -> Void) {
        guard n > 1 else { body(0, 0..<n); return }
        Parallel.run(parts: 2) { k in body(k, k == 0 ? 0..<(n / 2) : (n / 2)..<n) }
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
        locus_gemm(transA ? Int32(LOCUS_BLAS_TRANS) : Int32(LOCUS_BLAS_NO_TRANS), transB ? Int32(LOCUS_BLAS_TRANS) : Int32(LOCUS_BLAS_NO_TRANS),
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

/// The engine's thread pool (LocusKernels): one set of threads for products and element-wise work.
public enum Parallel {
    /// Runs body(p) for p in 0..<parts on the pool and returns when all are done. Parts must touch
    /// disjoint data. Nested calls (from inside a part) run their parts one after another.
    public static func run(parts: Int, _ body: (Int) -> Void) {
        guard parts > 1 else { if parts == 1 { body(0) }; return }
        withoutActuallyEscaping(body) { body in
            var box = body
            withUnsafeMutablePointer(to: &box) { context in
                locus_pool_run(Int32(parts), { context, part in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
                }, UnsafeMutableRawPointer(context))
            }
        }
    }

    /// Runs body over [0, n) in as many contiguous chunks as the pool has threads, each at least
    /// `minimum` long (for independent element- or row-wise work: results do not depend on the split).
    public static func chunks(_ n: Int, minimum: Int = 1, _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(Int(locus_pool_threads()), n / max(1, minimum)))
        guard parts > 1 else { body(0..<n); return }
        let size = (n + parts - 1) / parts
        run(parts: parts) { p in
            let lo = p * size, hi = min(n, lo + size)
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// An engine failure a user can act on (shape mismatch, bad architecture, NaN loss).
public struct EngineError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}
