/// Consensus merging: τ_MTL where at least k tasks' TALL masks agree.
struct ConsensusMethod: MergeMethodDefinition {
    let name = "consensus"
    let summary = ["TALL's masks m_t (--tall-lambda); m = 1[Σ_t m_t ≥ --k]; θ = θ0 + λ (m ⊙ τ_MTL)"]
    let citation = "Wang, Dimitriadis, Ortiz-Jiménez, Fleuret, Frossard (2024), Localizing Task Information for Improved Model Merging and Compression, ICML 2024: Consensus Merging."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [SharedParameters.lambda, SharedParameters.weight, TallParameters.tallLambda,
         .integer("k", \.consensusK, aliases: ["consensus-k"], range: "[1, ∞)", help: "minimum number of tasks whose masks keep an entry",
                  valid: { $0 >= 1 })]
    }
    var producer: MergeProducer { .direction(TallKernel(consensusK: true)) }
}
