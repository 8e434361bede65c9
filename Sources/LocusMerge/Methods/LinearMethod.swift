import LocusFormat

/// Linear merging ("model soups"): the weighted average of full models, no base.
struct LinearMethod: MergeMethodDefinition {
    let name = "linear"
    let summary = [
        "θ = Σ_i w_i θ_i / Σ_i w_i over full models of one architecture (--no-normalize: Σ_i w_i θ_i); no",
        "base, no task vectors; tensors that are not floating point are copied from the first model",
    ]
    let citation = "Wortsman, Ilharco, Gadre, Roelofs, Gontijo-Lopes, Morcos, Namkoong, Farhadi, Carmon, Kornblith, Schmidt (2022), Model soups, ICML 2022: the uniform soup, here with weights."
    let inputs = MergeInputKind.models(count: nil)
    var parameters: [MergeParameter] {
        [SharedParameters.weight, .bool("normalize", \.linearNormalize, help: "divide by the sum of the weights")]
    }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        guard o.linearNormalize, let w = o.weights, w.reduce(0, +) == 0 else { return [] }
        return ["linear: the weights sum to 0, so they cannot be normalized (give other weights or --no-normalize)"]
    }

    var producer: MergeProducer { .models(LinearKernel()) }
}

struct LinearKernel: ModelKernel {
    func combiner(for t: CheckpointTensor, options o: MergeOptions, blocks: (([[Double]]) throws -> Void) throws -> Void) throws -> ModelBlockCombiner {
        let normalize = o.linearNormalize
        return { models in
            let w = o.vectorWeights(models.count)
            let total = w.reduce(0, +)
            var out = [Double](repeating: 0, count: models[0].count)
            for (i, m) in models.enumerated() { for j in out.indices { out[j] += w[i] * m[j] } }
            if normalize { for j in out.indices { out[j] /= total } }
            return out
        }
    }
}
