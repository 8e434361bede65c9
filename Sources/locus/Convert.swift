import ArgumentParser
import Foundation
import LocusEngine
import LocusFormat
import LocusWorkflows

extension ArtifactKind: ExpressibleByArgument {}
extension ScoreReduction: ExpressibleByArgument {}
extension AbsentTensors: ExpressibleByArgument {}

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert checkpoints between Locus .h5, safetensors, Hugging Face folders and PyTorch files.",
        discussion: """
        Checkpoints (the input's kind is found from its content):
          IN (.h5, .safetensors, HF folder, PyTorch .bin/.pt) → OUT.h5
          IN → OUT/ (a Hugging Face folder; also when OUT is a folder or --format hf)
          IN.h5 → OUT.safetensors (one file)
        Tensors stream one by one, so memory does not grow with the model; outputs appear atomically. \
        Folders are laid out as transformers writes them; --config-from DIR copies config.json and \
        tokenizer files for from_pretrained. --dtype converts float tensors (one rounding); bit-exact \
        otherwise. The renaming options are recorded in the provenance.

        Other artifacts: IN.safetensors → OUT.h5 with --kind scores | mask | task-vector needs --base \
        (same tensors and shapes; its fingerprint is recorded); scores need --estimator and --samples. \
        A Locus scores, mask or task-vector file → OUT.safetensors exports it densely. --architecture \
        FILE stores a model description (spec §2.1). Examples and details: docs/checkpoints.md.
        """)

    @Argument(help: ".h5, .safetensors, a model folder or a PyTorch file.") var input: String
    @Argument(help: ".h5, .safetensors or a folder (written atomically).") var output: String
    @Option(help: "Kind made from safetensors.") var kind: ArtifactKind = .checkpoint
    @Option(help: ArgumentHelp("Checkpoint the scores, mask or vector belong to.", valueName: "file")) var base: String?
    @Option(help: ArgumentHelp("Scores: the estimator that made them.", valueName: "name")) var estimator: String?
    @Option(help: ArgumentHelp("Scores: number of inputs that contributed.", valueName: "n")) var samples: Int64?
    @Option(help: "Scores: sampled classes per input.") var draws: Int64 = 1
    @Option(help: ArgumentHelp("Scores: sum or mean.", valueName: "r")) var reduction: ScoreReduction = .sum
    @Option(help: ArgumentHelp("Masks: unlisted tensors.", valueName: "rule")) var absentTensors: AbsentTensors = .frozen
    @Option(help: ArgumentHelp("Checkpoints: a model description to store.", valueName: "file")) var architecture: String?
    @Option(help: ArgumentHelp("Folders: copy config.json and tokenizer from here.", valueName: "dir")) var configFrom: String?
    @Option(help: ArgumentHelp("Convert floating-point tensors to this dtype.", valueName: "t")) var dtype: LocusDType?
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try source.scoped {
            try protectInputs()
            var r = ConvertRequest(input: input, output: output)
            r.kind = kind
            r.importOptions.basePath = base; r.importOptions.estimator = estimator; r.importOptions.samples = samples
            r.importOptions.draws = draws; r.importOptions.reduction = reduction; r.importOptions.absentTensors = absentTensors
            r.format = out.format(for: output); r.architecture = architecture; r.configFrom = configFrom; r.dtype = dtype
            r.shardBytes = try out.shardBytes()
            r.provenance = Provenance(command: ["locus"] + Array(CommandLine.arguments.dropFirst()),
                                      inputs: [.init(role: "source", path: input, fingerprint: nil)], parameters: try source.parameters())
            if case .checkpoint(let n, let fp) = try r.execute(note: { StandardStream.error.write("locus: warning: \($0)\n") }) {
                print("\(output): \(n) tensors, \(fp)")
            }
        }
    }

    func validate() throws {
        if kind != .checkpoint, architecture != nil { throw ValidationError("--architecture applies to checkpoints only, not --kind \(kind.rawValue)") }
    }
}
