import LocusFormat

/// TALL masks: the multi-task direction, plus each task's mask and model written next to it.
struct TallMethod: MergeMethodDefinition {
    let name = "tall"
    let summary = [
        "τ_MTL = Σ_t w_t τ_t; m_t = 1[τ_t ≠ 0 ∧ |τ_t| ≥ --tall-lambda · |τ_MTL − τ_t|]; writes each task's mask",
        "and model θ0 + m_t ⊙ τ_MTL into --tall-dir; the output is θ0 + λ τ_MTL",
    ]
    let citation = "Wang, Dimitriadis, Ortiz-Jiménez, Fleuret, Frossard (2024), Localizing Task Information for Improved Model Merging and Compression, ICML 2024: TALL masks."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [SharedParameters.lambda, SharedParameters.weight, TallParameters.tallLambda,
         MergeParameter(name: "tall_dir", cliAliases: [], kind: .path, range: "", help: "directory for the per-task masks and models",
                        required: true, valid: { $0.tallDirectory != nil }, set: { o, v in if case .text(let d) = v { o.tallDirectory = d } },
                        get: { o in o.tallDirectory.map { .string($0) } })]
    }
    var producer: MergeProducer { .direction(TallKernel(consensusK: false)) }
}

enum TallParameters {
    static let tallLambda = MergeParameter.number("tall_lambda", \.tallLambda, range: "[0, ∞)", help: "λ_t of the mask rule",
                                                  valid: { $0 >= 0 && $0.isFinite })
}

/// The direction kernel of TALL and consensus.
struct TallKernel: DirectionKernel {
    let consensusK: Bool
    var writesTaskModels: Bool { !consensusK }

    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks {
        try TallDirection(tensor: name, count: count, maxBlock: maxBlock, inputs: inputs, consensusK: consensusK ? o.consensusK : nil,
                          options: o, scratch: scratch)
    }
}
