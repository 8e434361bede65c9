// locus-bench: micro-benchmarks of the engine.
//   locus-bench gemm [N] [repeats]   sgemm N×N×N through LocusEngine's BLAS; prints one JSON line
//   locus-bench score MODEL DATA [--split S] [--head H] [--estimator E] [--batches N] [--naive-batches M]
//                     [--batch-size B] [--repeats R]
//       times, on the first N batches of split S (in stored order, the batches `locus score --batches N`
//       scores): the efficient Scorer.accumulate (one forward + one backward per batch), the naive
//       Scorer.accumulateNaive (one backward per sample, on the first M batches, scaled per sample) and
//       one plain training epoch over the same N·B samples (Training.fit: SGD momentum 0.9, the loop
//       `locus train` runs). Batches are assembled before the clocks start; the three are timed in interleaved
//       rounds and the fastest of R rounds counts. Prints one JSON line.
//   locus-bench step MODEL [--batch-size B] [--repeats R] [--head H]
//       forward + backward (parameter gradients accumulated, as in training; no optimizer step) on seeded
//       random inputs of the model's input shape; one warm-up, then R timed steps; prints one JSON line
//   locus-bench sparse-step [--params N] [--repeats R] [--densities LIST]
//       one SparseSGDM / MaskedAdamW step per mask density vs a memcpy of the same bytes (see sparseStepBench)
import Foundation
import LocusEngine
import LocusFormat

func gemmBench(n: Int, repeats: Int) throws {
    try BLAS.ensureLoaded()
    var rng = SplitMix64(seed: 1)
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

struct ScoreBenchOptions {
    var model = "", data = "", split = "train", head = "default"
    var estimator = ScoreEstimator.talos
    var batches = 20, naiveBatches = 4, batchSize = 64, repeats = 5

    init(_ args: [String]) throws {
        var positional: [String] = []
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw EngineError("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func int() throws -> Int {
            let v = try value()
            guard let n = Int(v), n >= 1 else { throw EngineError("\(args[i - 1]) must be a whole number ≥ 1, got '\(v)'") }
            return n
        }
        while i < args.count {
            switch args[i] {
            case "--split": split = try value()
            case "--head": head = try value()
            case "--estimator":
                let v = try value()
                guard let e = ScoreEstimator(rawValue: v) else { throw EngineError("unknown estimator '\(v)'") }
                estimator = e
            case "--batches": batches = try int()
            case "--naive-batches": naiveBatches = try int()
            case "--batch-size": batchSize = try int()
            case "--repeats": repeats = try int()
            default: positional.append(args[i])
            }
            i += 1
        }
        guard positional.count == 2 else { throw EngineError("expected MODEL and DATA") }
        model = positional[0]; data = positional[1]
        naiveBatches = min(naiveBatches, batches)
    }
}

func scoreBench(_ o: ScoreBenchOptions) throws {
    try BLAS.ensureLoaded()
    let model = try Model.load(o.model)
    let d = try DatasetArtifact.read(o.data)
    let classes = try model.head(o.head).outFeatures
    let set = try Batches(d, split: o.split, inputShape: model.architecture.input, classes: classes, file: o.data)
    let n = min(o.batches, set.count / o.batchSize)
    guard n >= 1 else { throw EngineError("split '\(o.split)' has fewer than \(o.batchSize) samples") }
    let ids = Array(set.indices.prefix(n * o.batchSize))
    let batches = (0..<n).map { set.batch(ids[($0 * o.batchSize)..<(($0 + 1) * o.batchSize)]) }
    let samples = n * o.batchSize, naiveSamples = o.naiveBatches * o.batchSize
    func scorer() throws -> Scorer { try Scorer(model: model, head: o.head, estimator: o.estimator, seed: 0) }

    // Both paths compute the same sums (same seed, same batches, same sampled classes).
    let a = try scorer(), b = try scorer()
    for (x, y) in batches.prefix(o.naiveBatches) { try a.accumulate(x, labels: y); try b.accumulateNaive(x, labels: y) }
    var worst = 0.0, scale = 0.0
    for (u, v) in zip(a.sums, b.sums) {
        for (p, q) in zip(u, v) { worst = max(worst, Double(abs(p - q))); scale = max(scale, Double(abs(q))) }
    }
    let scored = a.parameters.reduce(0) { $0 + $1.value.count }

    // One plain training epoch over exactly the scored samples, with the engine's training loop.
    var subset = d
    subset.splits = ["bench": ids.sorted()]
    let trainSet = try Batches(subset, split: "bench", inputShape: model.architecture.input, classes: classes, file: o.data)
    var config = TrainingConfig()
    config.epochs = 1; config.batchSize = o.batchSize; config.optimizer = .sgd; config.learningRate = 0.01; config.momentum = 0.9
    config.schedule = .constant
    // The three measurements are interleaved, one of each per round, so that a busy machine slows all of them
    // alike; the fastest round of each counts. Round 0 warms up. The naive path runs on the first M batches only
    // (its cost per sample does not depend on how many there are).
    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }
    var efficient = Double.infinity, naive = Double.infinity, trainEpoch = Double.infinity
    var rounds: [(Double, Double, Double)] = []
    for r in 0...o.repeats {
        let s = try scorer()
        let e = try seconds { for (x, y) in batches { try s.accumulate(x, labels: y) } }
        let sn = try scorer()
        let nv = try seconds { for (x, y) in batches.prefix(o.naiveBatches) { try sn.accumulateNaive(x, labels: y) } }
        let m = try Model.load(o.model)
        let tr = try seconds { _ = try Training.fit(m, head: o.head, train: trainSet, validation: nil, config: config) }
        if r > 0 {
            efficient = min(efficient, e); naive = min(naive, nv); trainEpoch = min(trainEpoch, tr)
            rounds.append((e, nv, tr))
        }
    }
    func median(_ v: [Double]) -> Double { let s = v.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
    let medians = (median(rounds.map(\.0)), median(rounds.map(\.1)), median(rounds.map(\.2)))

    let out: [String: Any] = [
        "estimator": o.estimator.rawValue, "batch_size": o.batchSize, "batches": n, "samples": samples,
        "naive_batches": o.naiveBatches, "naive_samples": naiveSamples, "scored_parameters": scored, "threads": BLAS.threads,
        "efficient_seconds": efficient, "efficient_samples_per_s": Double(samples) / efficient,
        "naive_seconds": naive, "naive_samples_per_s": Double(naiveSamples) / naive,
        "train_epoch_seconds": trainEpoch, "train_samples_per_s": Double(samples) / trainEpoch,
        "efficient_over_naive": (Double(samples) / efficient) / (Double(naiveSamples) / naive),
        "efficient_over_train_time": efficient / trainEpoch,
        "max_abs_difference_efficient_vs_naive": worst, "max_abs_score": scale, "rounds": rounds.count,
        "median_seconds": ["efficient": medians.0, "naive": medians.1, "train_epoch": medians.2],
        "median_efficient_over_naive": (Double(samples) / medians.0) / (Double(naiveSamples) / medians.1),
        "median_efficient_over_train_time": medians.0 / medians.2,
    ]
    let json = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
    print(String(decoding: json, as: UTF8.self))
}

// MARK: - sparse-step

/// `locus-bench sparse-step [--params N] [--repeats R] [--densities 1,0.5,0.1,0.01]`: one optimizer step
/// of SparseSGDM (μ = 0.9, λ = 0.01) and MaskedAdamW (λ = 0.01) over N float32 parameters in four tensors
/// (½, ¼, ⅛, ⅛ of N), at each mask density (random bits, exactly ⌊d·n⌋ per tensor, represented as
/// `ParameterMask.from(bits:)` chooses: dense at 100 %, a multiplier from 50 %, indices below). Best and
/// median of R timed steps after two untimed ones (the first allocates the state). The memory-bandwidth
/// bound of a step is measured in the same run: a plain memcpy that touches as many bytes as the step
/// does (memcpy of B/2 bytes reads B/2 and writes B/2). Bytes touched per parameter and step, counted
/// honestly (4-byte floats; every array the loop reads or writes):
///   SparseSGDM  dense 20 (read p g buf, write p buf), multiplier 24 (+ read mask), indices 24 per entry (+ read index)
///   MaskedAdamW dense 28 (read p g m v, write p m v), multiplier 32, indices 32 per entry
/// Prints one JSON line.
func sparseStepBench(_ args: [String]) throws {
    var n = 4 << 20, repeats = 20
    var densities: [Double] = [1, 0.5, 0.1, 0.01]
    var i = 0
    while i < args.count {
        guard i + 1 < args.count else { throw EngineError("\(args[i]) needs a value") }
        switch args[i] {
        case "--params": guard let v = Int(args[i + 1]), v >= 8 else { throw EngineError("--params must be ≥ 8") }; n = v
        case "--repeats": guard let v = Int(args[i + 1]), v >= 1 else { throw EngineError("--repeats must be ≥ 1") }; repeats = v
        case "--densities":
            densities = try args[i + 1].split(separator: ",").map {
                guard let d = Double($0), d > 0, d <= 1 else { throw EngineError("densities must be in (0, 1], got '\($0)'") }
                return d
            }
        default: throw EngineError("unknown option \(args[i])")
        }
        i += 2
    }
    let sizes = [n / 2, n / 4, n / 8, n - n / 2 - n / 4 - n / 8]
    var rng = SplitMix64(seed: 7)
    let params = sizes.enumerated().map { k, c in
        let p = Parameter(name: "t\(k)", value: Tensor(shape: [c], data: (0..<c).map { _ in rng.uniform(-0.1, 0.1) }))
        p.grad = Tensor(shape: [c], data: (0..<c).map { _ in rng.uniform(-1e-3, 1e-3) })
        return p
    }
    func seconds(_ body: () -> Void) -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }
    func timed(_ body: () -> Void) -> (best: Double, median: Double) {
        body(); body()
        let ts = (0..<repeats).map { _ in seconds(body) }.sorted()
        return (ts[0], ts[ts.count / 2])
    }
    /// `body` and a memcpy of `bytes` bytes, timed alternately (so both see the same machine load; the
    /// machine is shared), best and median of each. Buffers are touched first: no page faults in the timing.
    func timedWithMemcpy(_ bytes: Int, _ body: () -> Void) -> (step: (best: Double, median: Double), memcpy: (best: Double, median: Double)) {
        let src = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64), dst = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { src.deallocate(); dst.deallocate() }
        memset(src, 1, bytes); memset(dst, 2, bytes)
        body(); body(); memcpy(dst, src, bytes)
        var a: [Double] = [], b: [Double] = []
        for _ in 0..<repeats { a.append(seconds(body)); b.append(seconds { memcpy(dst, src, bytes) }) }
        a.sort(); b.sort()
        return ((a[0], a[a.count / 2]), (b[0], b[b.count / 2]))
    }
    func memcpyTime(_ bytes: Int) -> Double { timedWithMemcpy(bytes, {}).memcpy.best }
    var rows: [[String: Any]] = []
    var memcpyRows: [String: [String: Any]] = [:]
    for opt in ["sparse-sgdm", "masked-adamw"] {
        let perDense = opt == "sparse-sgdm" ? 20 : 28, perMultiplier = perDense + 4, perEntry = perDense + 4
        for d in densities {
            let bits = Selection.random(shapes: sizes, density: d, scope: .local, seed: 11)
            let masks = zip(params, bits).map { ($0, ParameterMask.from(bits: $1)) }
            var ones = 0, bytes = 0
            var kinds: [String] = []
            for (p, m) in masks {
                switch m {
                case .dense: ones += p.value.count; bytes += perDense * p.value.count; kinds.append("dense")
                case .multiplier(let v): ones += v.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }; bytes += perMultiplier * p.value.count; kinds.append("multiplier")
                case .entries(let e): ones += e.count; bytes += perEntry * e.count; kinds.append("indices")
                }
            }
            let sgd = SparseSGDM(momentum: 0.9, weightDecay: 0.01), adam = MaskedAdamW(weightDecay: 0.01)
            let stepOnce = { if opt == "sparse-sgdm" { sgd.step(masks, lr: 1e-3) } else { adam.step(masks, lr: 1e-3) } }
            // At 100 %: the bound is a memcpy touching the same bytes (B/2 read + B/2 written), timed alternately with the step.
            let paired = d == 1 ? timedWithMemcpy((d == 1 ? perDense * n : 0) / 2, stepOnce) : nil
            let t = paired?.step ?? timed(stepOnce)
            var row: [String: Any] = [
                "optimizer": opt, "density": d, "parameters": n, "trainable": ones, "representation": Set(kinds).sorted().joined(separator: "+"),
                "seconds_best": t.best, "seconds_median": t.median, "parameters_per_s": Double(n) / t.best,
                "trainable_per_s": Double(ones) / t.best, "bytes_touched": bytes, "gb_per_s": Double(bytes) / t.best / 1e9,
            ]
            if d == 1 {
                // For reference also a memcpy of all B bytes (touching 2B).
                let half = paired!.memcpy.best, full = memcpyTime(bytes)
                memcpyRows[opt] = ["bytes": bytes, "memcpy_half_seconds": half, "memcpy_full_seconds": full,
                                   "memcpy_gb_per_s_read_plus_write": Double(bytes) / half / 1e9]
                row["bound_seconds"] = half
                row["bound_parameters_per_s"] = Double(n) / half
                row["fraction_of_bound"] = half / t.best
                row["fraction_of_bound_memcpy_full_bytes"] = full / t.best
            }
            rows.append(row)
        }
        // For comparison: the dense optimizer `locus train` uses (Optimizers.swift), same parameters and bytes.
        let dense: () -> Void
        if opt == "sparse-sgdm" { let o = SGD(momentum: 0.9, weightDecay: 0.01); dense = { o.step(params, lr: 1e-3) } }
        else { let o = AdamW(weightDecay: 0.01); dense = { o.step(params, lr: 1e-3) } }
        let bytes = perDense * n
        let pd = timedWithMemcpy(bytes / 2, dense)
        let td = pd.step
        let bound: Double? = pd.memcpy.best
        var row: [String: Any] = ["optimizer": opt == "sparse-sgdm" ? "dense-sgd (locus train)" : "dense-adamw (locus train)", "density": 1.0,
                                  "parameters": n, "trainable": n, "representation": "no mask", "seconds_best": td.best, "seconds_median": td.median,
                                  "parameters_per_s": Double(n) / td.best, "trainable_per_s": Double(n) / td.best, "bytes_touched": bytes,
                                  "gb_per_s": Double(bytes) / td.best / 1e9]
        if let bound { row["bound_seconds"] = bound; row["fraction_of_bound"] = bound / td.best; row["bound_parameters_per_s"] = Double(n) / bound }
        rows.append(row)
        if let dense = rows.first(where: { $0["optimizer"] as? String == opt && $0["density"] as? Double == 1 })?["seconds_best"] as? Double {
            for k in rows.indices where rows[k]["optimizer"] as? String == opt || (rows[k]["optimizer"] as? String)?.hasPrefix(opt == "sparse-sgdm" ? "dense-sgd" : "dense-adamw") == true {
                rows[k]["speedup_vs_dense"] = dense / (rows[k]["seconds_best"] as! Double)
            }
        }
    }
    let out: [String: Any] = ["parameters": n, "tensor_sizes": sizes, "repeats": repeats, "steps": rows, "memcpy": memcpyRows]
    let json = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
    print(String(decoding: json, as: UTF8.self))
}

func stepBench(_ args: [String]) throws {
    var batch = 32, repeats = 5, head = "default"
    var positional: [String] = []
    var i = 0
    while i < args.count {
        switch args[i] {
        case "--batch-size": guard i + 1 < args.count, let v = Int(args[i + 1]), v >= 1 else { throw EngineError("--batch-size needs a whole number ≥ 1") }; batch = v; i += 1
        case "--repeats": guard i + 1 < args.count, let v = Int(args[i + 1]), v >= 1 else { throw EngineError("--repeats needs a whole number ≥ 1") }; repeats = v; i += 1
        case "--head": guard i + 1 < args.count else { throw EngineError("--head needs a value") }; head = args[i + 1]; i += 1
        default: positional.append(args[i])
        }
        i += 1
    }
    guard positional.count == 1 else { throw EngineError("expected MODEL") }
    try BLAS.ensureLoaded()
    let model = try Model.load(positional[0])
    let classes = try model.head(head).outFeatures
    var rng = SplitMix64(seed: 1)
    let x = Tensor(shape: [batch] + model.architecture.input) { v in for j in 0..<v.count { v[j] = rng.normal() } }
    let y = (0..<batch).map { $0 % classes }
    func once() throws -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        let z = try model.forward(x, head: head, mode: .train)
        try model.backward(CrossEntropy()(z, labels: y).gradient, head: head)
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }
    model.zeroGrad()
    _ = try once()
    let times = try (0..<repeats).map { _ in try once() }.sorted()
    let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
    let out: [String: Any] = ["batch_size": batch, "repeats": repeats, "threads": BLAS.threads,
                              "parameters": model.parameters.reduce(0) { $0 + $1.value.count },
                              "best_seconds": times[0], "median_seconds": median,
                              "samples_per_s_best": Double(batch) / times[0], "samples_per_s_median": Double(batch) / median]
    print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]), as: UTF8.self))
}

let args = CommandLine.arguments
do {
    switch args.dropFirst().first {
    case "gemm":
        try gemmBench(n: args.count > 2 ? Int(args[2])! : 2048, repeats: args.count > 3 ? Int(args[3])! : 5)
    case "score":
        try scoreBench(try ScoreBenchOptions(Array(args.dropFirst(2))))
    case "sparse-step":
        try sparseStepBench(Array(args.dropFirst(2)))
    case "step":
        try stepBench(Array(args.dropFirst(2)))
    default:
        FileHandle.standardError.write("usage: locus-bench gemm [N] [repeats]\n       locus-bench score MODEL DATA [--split S] [--head H] [--estimator E] [--batches N] [--naive-batches M] [--batch-size B] [--repeats R]\n       locus-bench sparse-step [--params N] [--repeats R] [--densities 1,0.5,0.1,0.01]\n       locus-bench step MODEL [--batch-size B] [--repeats R] [--head H]\n".data(using: .utf8)!)
        exit(2)
    }
} catch {
    FileHandle.standardError.write("locus-bench: error: \(error)\n".data(using: .utf8)!)
    exit(1)
}
