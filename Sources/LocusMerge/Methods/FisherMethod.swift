import LocusFormat

/// Fisher merging: the per-entry Fisher-weighted average of the fine-tuned models θ0 + τ_t.
struct FisherMethod: MergeMethodDefinition {
    let name = "fisher"
    let summary = [
        "θ* = Σ_t w_t F_t θ_t / Σ_t w_t F_t with θ_t = θ0 + τ_t, F_t from --scores (one scores file per vector,",
        "same base; F = 1 where a file lacks a tensor), floored at --floor; --normalize divides summed scores",
        "by their sample count",
    ]
    let citation = "Matena, Raffel (2022), Merging Models with Fisher-Weighted Averaging, NeurIPS 2022: the diagonal-Fisher weighted average."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [SharedParameters.weight,
         MergeParameter(name: "scores", cliAliases: ["fisher-scores"], kind: .pathsPerInput, range: "", help: "one scores file per task vector",
                        required: true, valid: { !$0.fisherScores.isEmpty }, set: { o, v in if case .paths(let p) = v { o.fisherScores = p } },
                        get: { _ in nil }),
         .number("floor", \.fisherFloor, aliases: ["fisher-floor"], range: "(0, ∞)", help: "floor on F (a zero floor can make Σ F = 0)",
                 valid: { $0 > 0 && $0.isFinite }),
         .bool("normalize", \.fisherNormalize, aliases: ["fisher-normalize"], help: "divide summed scores by their sample count")]
    }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        guard !o.fisherScores.isEmpty, o.fisherScores.count != inputCount else { return [] }
        return ["fisher merging needs one scores file per task vector (\(o.fisherScores.count) for \(inputCount))"]
    }

    var producer: MergeProducer { .taskVectorBlocks(FisherKernel()) }
}

struct FisherKernel: TaskVectorBlockKernel {
    /// Opens the scores files: one per task vector, from the same base, covering tensors by name.
    func prepare(base: any CheckpointSource, basePath: String, inputs: [Merger.Input], options o: MergeOptions, output: String) throws -> TaskVectorBlockJob {
        let fp = try base.fingerprint
        var scores: [ScoresReader] = []
        for p in o.fisherScores {
            let s = try ScoresReader(path: p)
            guard s.info.baseFingerprint == fp else {
                throw LocusError(file: p, object: "/@base-fingerprint", "scores come from another model (\(s.info.baseFingerprint)), not \(basePath)")
            }
            for t in s.tensors {
                guard let b = base.tensor(named: t.name), b.shape == t.shape else {
                    throw LocusError(file: p, object: t.objectPath, "does not match a tensor of \(basePath)")
                }
            }
            scores.append(s)
        }
        return { w, dtypeFor, report in
            try Merger.fisherStreaming(w, base, inputs: inputs, scores: scores, options: o, dtypeFor: dtypeFor, output: output, report: &report)
        }
    }
}
