import ArgumentParser
import Foundation
import LocusEngine
import LocusFormat
import SafeTensors

extension ArtifactKind: ExpressibleByArgument {}
extension ScoreReduction: ExpressibleByArgument {}
extension AbsentTensors: ExpressibleByArgument {}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert between safetensors and Locus artifacts (direction by file extension).",
        discussion: """
        IN.safetensors → OUT.h5 imports; IN.h5 → OUT.safetensors exports. Both stream tensor by tensor
        (large tensors in 64 MiB row blocks), so memory does not grow with the model.

        Import as --kind checkpoint (default): bit-exact for F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL;
          __metadata__ is kept in /metadata. F8 types have no HDF5 equivalent and are refused.
        Import as --kind scores | mask | task-vector: needs --base CHECKPOINT.h5; every tensor must exist in the
          base with the same shape, and the base's fingerprint is recorded. Scores are float tensors stored as
          float32 (needs --estimator and --samples); masks are BOOL or U8 0/1 tensors (1 = trainable); task vectors
          are dense float tensors τ = θ_ft − θ_base: zeros are dropped and each tensor gets the cheapest encoding
          (coo, bitmask or dense — spec §5). Task-vector values pass through float32.
        --architecture FILE (checkpoints) stores a model description (a spec §2.1
          JSON file, or the /architecture of a Locus checkpoint) so the engine
          can run the imported weights. Every parameter it implies must be in
          the safetensors file with that shape and a float dtype; this is
          checked before anything is written. A timm VisionTransformer saved
          with safetensors.torch.save_file(model.state_dict(), F) imports as is:
            locus init --preset vit --input 3,224,224 --classes 1000 \\
              --patch-size 16 --width 192 --depth 12 --num-heads 3 \\
              --head imagenet --head-prefix head -o vit-ti-arch.h5
            locus convert vit_tiny.safetensors vit-ti.h5 \\
              --architecture vit-ti-arch.h5
          open_clip names (conv1, class_embedding, transformer.resblocks.N...)
          need renaming first: docs/vit.md gives the mapping.
        Export: checkpoints bit-exact with their metadata; scores as F32; masks as BOOL; task vectors as dense
          unscaled tensors of their value dtype, with locus.kind / locus.base-fingerprint / locus.scale in __metadata__.
        """)

    @Argument(help: "Input file (.safetensors or a Locus .h5).") var input: String
    @Argument(help: "Output file (.h5 or .safetensors); written atomically.") var output: String
    @Option(help: "Kind of artifact to create when importing.") var kind: ArtifactKind = .checkpoint
    @Option(help: "The checkpoint scores, masks and task vectors belong to.") var base: String?
    @Option(help: "Scores: the estimator that produced them (e.g. talos, fisher-empirical).") var estimator: String?
    @Option(help: "Scores: number of inputs that contributed.") var samples: Int64?
    @Option(help: "Scores: sampled classes per input.") var draws: Int64 = 1
    @Option(help: "Scores: whether values are sums or means over samples × draws.") var reduction: ScoreReduction = .sum
    @Option(help: "Masks: what tensors without a mask entry are.") var absentTensors: AbsentTensors = .frozen
    @Option(help: "Checkpoints: a model description (JSON, or a Locus checkpoint to take /architecture from) to store with the weights.")
    var architecture: String?

    func run() throws {
        try reportingErrors {
            try protectInputs()
            let inST = input.hasSuffix(".safetensors"), outST = output.hasSuffix(".safetensors")
            switch (inST, outST) {
            case (true, false):
                var o = LocusFormat.Convert.ImportOptions()
                o.kind = kind; o.basePath = base; o.estimator = estimator; o.samples = samples
                o.draws = draws; o.reduction = reduction; o.absentTensors = absentTensors
                if let architecture {
                    guard kind == .checkpoint else { throw LocusError(file: architecture, "--architecture applies to checkpoints only") }
                    o.architecture = try checkedArchitecture(architecture, against: input)
                }
                try LocusFormat.Convert.importSafeTensors(from: input, to: output, options: o,
                                                          provenance: Provenance(command: ["locus"] + Array(CommandLine.arguments.dropFirst())))
            case (false, true):
                try LocusFormat.Convert.exportSafeTensors(from: input, to: output)
            case (true, true):
                throw LocusError(file: output, "both files are safetensors; one side must be a Locus .h5 file")
            case (false, false):
                throw LocusError(file: output, "neither file ends in .safetensors; convert goes between safetensors and Locus .h5")
            }
        }
    }

    /// The description as JSON, after checking that the safetensors file holds every parameter it implies.
    private func checkedArchitecture(_ path: String, against source: String) throws -> String {
        let arch = try loadArchitecture(path)
        let model = try engine(file: path) { try Model(arch, seed: 0) }
        let reader: SafeTensorsReader
        do { reader = try SafeTensorsReader(path: source) } catch { throw LocusError(file: source, "\(error)") }
        let problems = parameterMismatches(model) { name in
            reader.entry(named: name).map { ($0.shape, $0.dtype.rawValue, [.F64, .F32, .F16, .BF16].contains($0.dtype)) }
        }.map { $0.message }
        guard problems.isEmpty else {
            throw LocusError(file: source, "does not fit the architecture of \(path) (\(problems.count) problem(s)): \(problems.prefix(8).joined(separator: "; "))")
        }
        let used = Set(model.parameters.map(\.name))
        let extra = reader.entries.map(\.name).filter { !used.contains($0) }
        if !extra.isEmpty {
            FileHandle.standardError.write("locus: warning: \(source): \(extra.count) tensor(s) the architecture does not use are kept as they are: \(extra.prefix(6).joined(separator: ", "))\n")
        }
        return try arch.json()
    }
}
