import LocusFormat

/// Generalized task arithmetic: a method is a sparsification of each task vector composed with a
/// consensus rule, then θ = θ0 + λ·d. The methods in this folder that conform to it are
/// compositions (their files name one `GTAComposition`), not copies of each other:
///
/// | method           | sparsification         | consensus     |
/// |------------------|------------------------|---------------|
/// | task_arithmetic  | none                   | none (Σ w τ)  |
/// | ties             | magnitude              | sign election |
/// | dare_linear      | random                 | none          |
/// | dare_ties        | random, then magnitude | sign election |
/// | breadcrumbs      | per-row outliers       | none          |
/// | breadcrumbs_ties | per-row outliers       | sign election |
/// | della_linear     | magnitude-ranked drop  | none          |
/// | della            | magnitude-ranked drop  | sign election |
protocol GeneralizedTaskArithmeticMethod: MergeMethodDefinition {
    var composition: GTAComposition { get }
}

/// A generalized-task-arithmetic method: its name, its composition and its words (one file each,
/// a `static let` on this type); parameters, checks and kernel follow from the composition.
struct GTAMethod: GeneralizedTaskArithmeticMethod {
    let name: String
    let composition: GTAComposition
    let aliases: [String]
    let summary: [String]
    let citation: String
    init(_ name: String, _ composition: GTAComposition, aliases: [String] = [], summary: String, citation: String) {
        self.name = name; self.composition = composition; self.aliases = aliases; self.summary = [summary]; self.citation = citation
    }
}

extension GeneralizedTaskArithmeticMethod {
    var inputs: MergeInputKind { .taskVectors }

    /// λ and the weights, then each sparsification's parameters (sign election has none).
    var parameters: [MergeParameter] {
        var p: [MergeParameter] = [SharedParameters.lambda, SharedParameters.weight]
        if composition.random { p += Sparsification.randomParameters }
        if composition.magnitude { p += Sparsification.magnitudeParameters }
        if composition.outliers { p += Sparsification.outlierParameters }
        if composition.magPrune { p += Sparsification.magPruneParameters }
        return p
    }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        var out: [String] = []
        if composition.outliers, o.breadcrumbsBeta + o.breadcrumbsGamma > 1 {
            out.append("\(name) needs density (β) + gamma (γ) ≤ 1, got \(o.breadcrumbsBeta) + \(o.breadcrumbsGamma)")
        }
        if composition.magPrune, o.dellaDensity < 1, !(o.dellaDensity - o.dellaEpsilon > 0 && o.dellaDensity + o.dellaEpsilon < 1) {
            out.append("\(name) needs density ± epsilon in (0, 1) (the keep probabilities), got \(o.dellaDensity) ± \(o.dellaEpsilon)")
        }
        return out
    }

    var producer: MergeProducer { .direction(GTAKernel(composition: composition)) }
}

/// The direction kernel of every generalized-task-arithmetic method.
struct GTAKernel: DirectionKernel {
    let composition: GTAComposition

    func prepare(base: any CheckpointSource, inputs: [Merger.Input], options o: MergeOptions) throws -> DirectionContext {
        guard composition.magnitude, o.tiesScope == .global else { return DirectionContext() }
        return DirectionContext(globalThresholds: try Merger.globalThresholds(base: base, inputs: inputs, random: composition.random, options: o))
    }

    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks {
        if composition.outliers {
            return try BreadcrumbsDirection(tensor: name, shape: shape, count: count, maxBlock: maxBlock, inputs: inputs,
                                            signElection: composition.signElection, options: o, scratch: scratch)
        }
        return try BlockDirection(tensor: name, shape: shape, count: count, maxBlock: maxBlock, inputs: inputs, composition: composition, options: o,
                                  globalThresholds: context.globalThresholds, scratch: scratch)
    }
}

/// Parameters more than one method declares (one definition each).
enum SharedParameters {
    static let lambda = MergeParameter.number("lambda", \.lambda, help: "λ, the scale of the merged direction (set by --alpha-grid when searching)")
    static let weight = MergeParameter(
        name: "weight", cliAliases: ["weights"], kind: .numbersPerInput, range: "", help: "one weight per input, comma-separated; negative negates a task",
        required: false, valid: { $0.weights?.allSatisfy(\.isFinite) ?? true },
        set: { o, v in if case .numbers(let w) = v { o.weights = w } }, get: { o in o.weights.map { .array($0.map { .number($0) }) } })
}

/// The sparsifications of generalized task arithmetic and their parameters.
enum Sparsification {
    /// Random (DARE; Yu et al., 2024, §3): each stored entry is dropped with probability p, the kept ones rescaled by 1/(1−p).
    static let randomParameters: [MergeParameter] = [
        .number("drop_rate", \.dareDropRate, aliases: ["dare-drop"], range: "[0, 1)", help: "probability p that an entry is dropped",
                valid: { $0 >= 0 && $0 < 1 }),
        .bool("rescale", \.dareRescale, aliases: ["dare-rescale"], help: "rescale kept entries by 1/(1−p) (--no-rescale: without)"),
        seed,
    ]
    /// The seed of the random sparsifications (DARE's and DELLA's drops).
    static let seed = MergeParameter.unsigned("seed", \.seed, range: "[0, 2^64)", help: "seed of the drop decisions (SplitMix64, per vector and tensor)")
    /// Magnitude (TIES; Yadav et al., 2023, §3 "trim"): keep each vector's top `density` of |τ|.
    static let magnitudeParameters: [MergeParameter] = [
        .number("density", \.tiesDensity, aliases: ["ties-density"], range: "(0, 1]", help: "fraction of entries kept per vector, top by |τ|",
                valid: { $0 > 0 && $0 <= 1 }),
        .choice("scope", \.tiesScope, [.global, .tensor], aliases: ["ties-scope"],
                help: "rank over the whole model (paper) or per tensor (mergekit)"),
    ]
    /// Per-row outliers (Breadcrumbs; Davari & Belilovsky, 2024, §3): drop the top γ of |τ|, keep the next β.
    static let outlierParameters: [MergeParameter] = [
        .number("density", \.breadcrumbsBeta, aliases: ["beta"], range: "(0, 1]", help: "β, fraction kept after the dropped top",
                valid: { $0 > 0 && $0 <= 1 }),
        .number("gamma", \.breadcrumbsGamma, range: "[0, 1), β + γ ≤ 1", help: "γ, top fraction of |τ| dropped",
                valid: { $0 >= 0 && $0 < 1 }),
        .choice("scope", \.breadcrumbsScope, [.row, .tensor], aliases: ["breadcrumbs-scope"],
                help: "rank per row (paper) or per tensor (mergekit)"),
    ]
    /// Magnitude-ranked drop (DELLA's MagPrune; Deep, Bhardwaj & Poria, 2024, §3): per row, keep the entry of
    /// |τ| rank r (ascending) of n with probability (density − ε) + 2ε·r/(n − 1), rescaled by 1/p.
    static let magPruneParameters: [MergeParameter] = [
        .number("density", \.dellaDensity, range: "(0, 1], density ± epsilon in (0, 1)",
                help: "mean keep probability per row (1 keeps every entry)", valid: { $0 > 0 && $0 <= 1 }),
        .number("epsilon", \.dellaEpsilon, range: "[0, 1)", help: "ε, half the spread of keep probabilities from smallest to largest |τ|",
                valid: { $0 >= 0 && $0 < 1 }),
        .bool("rescale", \.dellaRescale, help: "divide each kept entry by its keep probability (--no-rescale: without)"),
        seed,
    ]
}
