import ArgumentParser
import Foundation
import LocusEngine
import LocusFormat
import LocusWorkflows

extension ArtifactKind: ExpressibleByArgument {}
extension ScoreReduction: ExpressibleByArgument {}
extension AbsentTensors: ExpressibleByArgument {}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
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
    @Option(help: ArgumentHelp("Checkpoints: a model description to store.", valueName: "file"))
    var architecture: String?
    @Option(help: ArgumentHelp("Folders: copy config.json and tokenizer from here.", valueName: "dir"))
    var configFrom: String?
    @Option(help: ArgumentHelp("Convert floating-point tensors to this dtype.", valueName: "t"))
    var dtype: LocusDType?
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try source.scoped {
            try protectInputs()
            let prov = Provenance(command: ["locus"] + Array(CommandLine.arguments.dropFirst()),
                                  inputs: [.init(role: "source", path: input, fingerprint: nil)], parameters: try source.parameters())
            let inputKind = try detectCheckpointKind(path: input)
            let format = out.format(for: output)
            if kind != .checkpoint {
                guard inputKind == .safetensors, format == .h5 else {
                    throw LocusError(file: input, "--kind \(kind.rawValue) imports a .safetensors file into a Locus .h5 file")
                }
                var o = Conversion.ImportOptions()
                o.kind = kind; o.basePath = base; o.estimator = estimator; o.samples = samples
                o.draws = draws; o.reduction = reduction; o.absentTensors = absentTensors
                return try Conversion.importSafeTensors(from: input, to: output, options: o, provenance: prov)
            }
            if output.hasSuffix(".safetensors") && format == .h5 {
                guard inputKind == .locus, try source.openOptions().renaming == nil else {
                    throw LocusError(file: output, "a single .safetensors output is exported from a Locus .h5 file without renaming; write a folder (OUT/) instead")
                }
                guard dtype == nil, configFrom == nil else { throw LocusError(file: output, "--dtype and --config-from apply to .h5 and folder outputs") }
                return try Conversion.exportSafeTensors(from: input, to: output)
            }
            let src = try openCheckpoint(path: input)
            if let r = src as? RenamedSource, r.droppedCount > 0 {
                StandardStream.error.write("locus: \(input): --strip-prefix dropped \(r.droppedCount) tensor(s) without the prefix\n")
            }
            var arch = try src.architecture()
            if let architecture { arch = try checkedArchitecture(architecture, against: src) }
            let fp = try Conversion.write(src, to: output, architecture: arch, format: format, dtype: dtype,
                                                   shardBytes: try out.shardBytes(), configFrom: configFrom, provenance: prov)
            print("\(output): \(src.tensors.count) tensors, \(fp)")
        }
    }

    /// The description as JSON, after checking that the source holds every parameter it implies.
    private func checkedArchitecture(_ path: String, against source: any CheckpointSource) throws -> String {
        let (json, extra) = try ArchitectureFiles.checked(path, against: source, sourcePath: input)
        if !extra.isEmpty {
            StandardStream.error.write("locus: warning: \(input): \(extra.count) tensor(s) the architecture does not use are kept as they are: \(extra.prefix(6).joined(separator: ", "))\n")
        }
        return json
    }

    func validate() throws {
        if kind != .checkpoint, architecture != nil { throw ValidationError("--architecture applies to checkpoints only, not --kind \(kind.rawValue)") }
    }
}
