import Foundation
import LocusFormat
import LocusEngine

/// `locus init`: a new checkpoint from a preset (mlp, lenet, vit) or a description file, with
/// PyTorch's default initialisation from Locus's seeded generator; CLIP's fixed zero-shot head
/// takes its class embeddings from a .npy file (docs/clip.md).
public struct InitRequest {
    public var output: String
    /// mlp, lenet or vit (ignored with `config`).
    public var preset = "mlp"
    /// A description (JSON file or checkpoint, spec §2.1) instead of a preset.
    public var config: String?
    /// A dataset artifact: the input shape, class count and class names when not given.
    public var data: String?
    public var input: [Int]?
    public var classes: Int?
    public var head = "default"
    public var hidden: [Int]?
    public var channels = [6, 16]
    public var patchSize = 16, width = 192, depth = 12, numHeads = 3
    public var mlpRatio = 4.0
    public var headPrefix: String?
    /// The ViT's activation, patch bias, norm_pre, eps and projection (CLIP's image tower).
    public var variant = Architecture.ViTVariant()
    /// The first head is CLIP's fixed zero-shot head.
    public var zeroShot = false
    /// Zero-shot head: class text embeddings [C, E] (.npy).
    public var textEmbeddings: String?
    public var logitScale = 100.0
    public var seed: UInt64 = 0
    public var command: [String] = []
    public init(output: String) { self.output = output }

    public struct Outcome {
        public var preset: String
        public var parameters: Int
        public var heads: [String]
        public var fingerprint: String
    }

    public func execute() throws -> Outcome {
        let text = try textEmbeddings.map { try NumPy.readMatrix($0) }
        var inputShape = input, classCount = classes
        var classNames: [String]?
        if let data {
            let d = try DatasetArtifact.read(data)
            inputShape = inputShape ?? Array(d.shape.dropFirst())
            classCount = classCount ?? d.classes.count
            classNames = d.classes.count == classCount ? d.classes : nil
        }
        if let text, let textEmbeddings {
            if let c = classCount, c != text.rows {
                throw LocusError(file: textEmbeddings, "holds \(text.rows) class embeddings, the head has \(c) classes")
            }
            classCount = text.rows
        }
        var arch: Architecture
        if let config {
            arch = try ArchitectureDescription.load(config)
        } else {
            guard let inputShape else { throw RequestError("input", "the input shape is unknown: give it, or a dataset") }
            guard let classCount else { throw RequestError("classes", "the class count is unknown: give it, or a dataset") }
            arch = try engine(file: output) {
                switch preset {
                case "mlp": return Architecture.mlp(input: inputShape, hidden: hidden ?? [256, 256], classes: classCount, head: head, classNames: classNames)
                case "lenet": return try Architecture.lenet(input: inputShape, channels: channels, hidden: hidden ?? [120, 84],
                                                            classes: classCount, head: head, classNames: classNames)
                case "vit":
                    guard inputShape.count == 3, inputShape[1] == inputShape[2] else {
                        throw EngineError("vit needs square images [C, S, S], got \(inputShape)")
                    }
                    var v = variant
                    v.zeroShot = zeroShot || textEmbeddings != nil
                    return try Architecture.vit(imageSize: inputShape[1], patch: patchSize, channels: inputShape[0], width: width, depth: depth,
                                                heads: numHeads, mlpRatio: mlpRatio, classes: classCount, head: head, classNames: classNames,
                                                headPrefix: headPrefix, variant: v)
                default: throw EngineError("unknown preset '\(preset)' (mlp, lenet, vit)")
                }
            }
            if zeroShot || textEmbeddings != nil, preset != "vit" {
                for i in arch.heads.indices { arch.heads[i].type = "zero_shot" }
            }
        }
        let model = try engine(file: output) { try Model(arch, seed: seed) }
        if textEmbeddings != nil { _ = try engine(file: output) { try model.head(head) } }   // a clear error for a missing head
        if let zs = model.heads[head] as? ZeroShotHead {
            zs.logitScale.value.data = [Float(Foundation.log(logitScale))]
            if let text, let textEmbeddings {
                guard text.columns == zs.inFeatures else {
                    throw LocusError(file: textEmbeddings, "holds embeddings of width \(text.columns), the model's features have width \(zs.inFeatures)")
                }
                zs.textEmbeddings.value.data = text.values
            }
        } else if let textEmbeddings {
            throw LocusError(file: textEmbeddings, "the head '\(head)' is not a zero-shot head (make it one, or use a description whose head has \"type\": \"zero_shot\")")
        }
        let inputs: [Provenance.Input] = (data.map { [.init(role: "data", path: $0, fingerprint: nil)] } ?? [])
            + (textEmbeddings.map { [.init(role: "text-embeddings", path: $0, fingerprint: nil)] } ?? [])
        let fp = try model.save(output, provenance: Provenance(command: command, inputs: inputs,
                                                               parameters: ["seed": .integer(Int64(seed)), "preset": .string(arch.preset ?? "config")]))
        return Outcome(preset: arch.preset ?? "custom", parameters: model.parameters.reduce(0) { $0 + $1.value.count },
                       heads: model.headNames, fingerprint: fp)
    }
}
