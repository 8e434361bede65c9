import LocusFormat

/// Feeds a dataset artifact to a model: normalised float32 batches of a split, in a seeded order.
public struct Batches {
    public let data: LabelledData
    public let indices: [Int]
    /// Per-sample input shape the batches have (the model's input shape).
    public let sampleShape: [Int]
    private let scale: Float
    private let mean: [Float], inverseStd: [Float]
    private let channelSize: Int

    /// `split` nil = every sample. Throws when the data do not fit `inputShape` or the head's classes.
    public init(_ data: LabelledData, split: String?, inputShape: [Int], classes: Int? = nil, file: String = "dataset") throws {
        self.data = data
        if let split {
            guard let idx = data.splits[split] else {
                throw LocusError(file: file, object: "/splits/\(split)", "no such split (splits: \(data.splits.keys.sorted().joined(separator: ", ")))")
            }
            indices = idx
        } else { indices = Array(0..<data.sampleCount) }
        guard !indices.isEmpty else { throw LocusError(file: file, object: split.map { "/splits/\($0)" } ?? "/inputs", "has no samples") }
        let per = Array(data.shape.dropFirst())
        guard per.reduce(1, *) == inputShape.reduce(1, *), per == inputShape || inputShape.count == 1 || per.count == 1 else {
            throw LocusError(file: file, object: "/inputs", "samples have shape \(per), the model expects \(inputShape)")
        }
        if let classes {
            if let bad = indices.first(where: { data.labels[$0] >= Int64(classes) || data.labels[$0] < 0 }) {
                throw LocusError(file: file, object: "/labels", "label \(data.labels[bad]) of sample \(bad) is out of range for a head with \(classes) classes")
            }
        }
        sampleShape = inputShape
        scale = Float(data.normalization.scale)
        let k = data.normalization.mean.count
        channelSize = k > 1 ? per.dropFirst().reduce(1, *) : per.reduce(1, *)
        mean = data.normalization.mean.map(Float.init)
        inverseStd = data.normalization.std.map { Float(1 / $0) }
    }

    public var count: Int { indices.count }

    /// The order of one epoch: shuffled by a generator seeded with (seed, epoch), or as stored.
    public func order(epoch: Int, seed: UInt64?, shuffle: Bool) -> [Int] {
        guard shuffle, let seed else { return indices }
        var rng = SplitMix64.derived(seed: seed, 0x5EED_0000 + UInt64(epoch))
        return rng.permutation(indices.count).map { indices[$0] }
    }

    /// Inputs [B, sampleShape…] and labels of the given sample ids.
    public func batch(_ ids: ArraySlice<Int>) -> (x: Tensor, y: [Int]) {
        let per = sampleShape.reduce(1, *)
        let channels = max(mean.count, inverseStd.count)
        let plane = channels > 1 ? channelSize : per
        // x ↦ x·(scale/std) − mean/std, one multiply-add per element, per channel plane.
        let mul = (0..<channels).map { scale * inverseStd[inverseStd.count > 1 ? $0 : 0] }
        let add = (0..<channels).map { -mean[mean.count > 1 ? $0 : 0] * inverseStd[inverseStd.count > 1 ? $0 : 0] }
        let rows = Array(ids)
        let x = Tensor(shape: [ids.count] + sampleShape) { out in Parallel.chunks(rows.count, minimum: 16) { range in
            for r in range {
                let id = rows[r]
                let src = id * per, dst = r * per
                for c in 0..<(per / plane) {
                    let (m, a, o) = (mul[c], add[c], c * plane)
                    switch data.inputs {
                    case .uint8(let v):
                        v.withUnsafeBufferPointer { s in for j in 0..<plane { out[dst + o + j] = Float(s[src + o + j]) * m + a } }
                    case .float32(let v):
                        v.withUnsafeBufferPointer { s in for j in 0..<plane { out[dst + o + j] = s[src + o + j] * m + a } }
                    }
                }
            }
        } }
        return (x, ids.map { Int(data.labels[$0]) })
    }
}
