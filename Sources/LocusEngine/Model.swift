import Foundation
import LocusFormat

/// A sequential body shared by every task and one head per task (linear, or a fixed zero-shot head). Parameter names follow
/// PyTorch: a module holding `layers = nn.Sequential(...)` and `heads = nn.ModuleDict(...)` has
/// exactly these state-dict keys (`layers.1.weight`, `heads.digits.weight`).
public final class Model {
    public private(set) var architecture: Architecture
    public let body: [any Layer]
    public private(set) var heads: [String: any ClassifierHead] = [:]
    /// Fingerprint of the checkpoint this model was loaded from (nil for a new model).
    public private(set) var sourceFingerprint: String?

    public init(_ architecture: Architecture, seed: UInt64) throws {
        try architecture.validate()
        try BLAS.ensureLoaded()
        self.architecture = architecture
        let layers = try architecture.layers.enumerated().map { i, spec in
            try spec.build(prefix: architecture.prefix(ofLayer: i), seed: SplitMix64.derivedSeed(seed, UInt64(i)))
        }
        body = layers
        firstTrainable = layers.firstIndex { !$0.parameters.isEmpty }
        if let i = firstTrainable, let first = layers[i] as? any InputGradientOptional { first.computesInputGradient = false }
        for (j, h) in architecture.heads.enumerated() {
            heads[h.name] = Model.makeHead(h, seed: SplitMix64.derivedSeed(seed, 1_000_000 + UInt64(j)))
        }
    }

    /// Index of the first body layer with parameters: backpropagation stops there.
    let firstTrainable: Int?

    static func makeHead(_ h: Architecture.Head, seed: UInt64) -> any ClassifierHead {
        if h.isZeroShot { return ZeroShotHead(prefix: h.parameterPrefix, features: h.inFeatures, classes: h.outFeatures, seed: seed) }
        return Linear(spec: .linear(h.inFeatures, h.outFeatures), prefix: h.parameterPrefix, inFeatures: h.inFeatures,
                      outFeatures: h.outFeatures, bias: true, seed: seed)
    }

    public var headNames: [String] { architecture.heads.map(\.name) }

    public func head(_ name: String) throws -> any ClassifierHead {
        guard let h = heads[name] else {
            throw EngineError("the model has no head '\(name)' (heads: \(headNames.isEmpty ? "none" : headNames.joined(separator: ", ")))")
        }
        return h
    }

    /// A head that must be linear (its weight and bias are wanted).
    public func linearHead(_ name: String) throws -> Linear {
        guard let h = try head(name) as? Linear else { throw EngineError("head '\(name)' is a zero-shot head, not a linear one") }
        return h
    }

    /// Adds a freshly initialised head for a new task.
    public func addHead(_ name: String, classes: Int, classNames: [String]? = nil, seed: UInt64) throws {
        guard heads[name] == nil else { throw EngineError("the model already has a head '\(name)'") }
        let features = try architecture.featureShape()
        guard features.count == 1 else { throw EngineError("the body's output \(features) is not a feature vector") }
        let spec = Architecture.Head(name: name, inFeatures: features[0], outFeatures: classes, classes: classNames)
        var next = architecture
        next.heads.append(spec)
        try next.validate()
        architecture = next
        heads[name] = Model.makeHead(spec, seed: seed)
    }

    public var bodyParameters: [Parameter] { body.flatMap(\.parameters) }
    /// Every parameter: body first, then heads in architecture order.
    public var parameters: [Parameter] { bodyParameters + architecture.heads.flatMap { heads[$0.name]!.parameters } }

    /// Features of the body for a batch [B, input…].
    public func features(_ x: Tensor, mode: Mode) throws -> Tensor {
        let sample = Array(x.shape.dropFirst())
        guard sample == architecture.input || (sample.reduce(1, *) == architecture.input.reduce(1, *) && (sample.count == 1 || architecture.input.count == 1)) else {
            throw EngineError("input samples have shape \(sample), the model expects \(architecture.input)")
        }
        var h = x.reshaped([x.rows] + architecture.input)
        for layer in body { h = layer.forward(h, mode: mode) }
        return h
    }

    public func forward(_ x: Tensor, head: String, mode: Mode) throws -> Tensor {
        let hd = try self.head(head)
        return hd.forward(try features(x, mode: mode), mode: mode)
    }

    /// Backpropagates d loss / d logits through the head and (unless `headOnly`) the body.
    public func backward(_ gLogits: Tensor, head: String, headOnly: Bool = false) throws {
        var g = try self.head(head).backward(gLogits)
        if headOnly { return }
        guard let stop = firstTrainable else { return }
        for layer in body[stop...].reversed() { g = layer.backward(g) }
    }

    public func zeroGrad() { parameters.forEach { $0.zeroGrad() } }

    // MARK: checkpoints

    /// Loads a checkpoint written by `save` (or any checkpoint whose `/architecture` describes its tensors).
    public static func load(_ path: String) throws -> Model {
        let reader = try openCheckpoint(path: path)
        guard let text = try reader.architecture() else {
            throw LocusError(file: path, object: "/architecture", "the checkpoint has no model description; create models with `locus init`")
        }
        let arch = try ArchitectureDescription.decode(text, file: path)
        let model: Model
        do { model = try Model(arch, seed: 0) } catch let e as EngineError { throw LocusError(file: path, object: "/architecture", e.description) }
        let problems = ArchitectureCheck.mismatches(model, in: reader)
        guard problems.isEmpty else { throw ArchitectureCheck.error(problems, file: path) }
        for p in model.parameters {
            let t = reader.tensor(named: p.name)!
            p.value = Tensor(shape: t.shape, data: try reader.readFloat32(t))
        }
        model.sourceFingerprint = try reader.fingerprint
        return model
    }

    /// Writes the model as a Locus checkpoint (float32) with its architecture; returns the fingerprint.
    @discardableResult
    public func save(_ path: String, provenance: Provenance = Provenance()) throws -> String {
        let w = try CheckpointWriter(path: path, provenance: provenance, architecture: try architecture.json())
        for p in parameters.sorted(by: { TensorName.byteOrder($0.name, $1.name) }) {
            try w.add(name: p.name, values: p.value.data, shape: p.value.shape)
        }
        return try w.finish()
    }
}
