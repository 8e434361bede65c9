import LocusFormat

/// Masks made from other files, for analysis and for re-using one task's support on another:
/// set operations between masks of one base, and the mask of a task vector's largest entries.
/// Each output is a mask of the same base (`/@base-fingerprint` carried over); its provenance
/// names every input with its fingerprint.
public enum MaskOperations {
    public enum SetOperation: String, Sendable, CaseIterable {
        /// Entries any input selects.
        case union
        /// Entries every input selects.
        case intersection
        /// Entries the first input selects and none of the others.
        case difference
    }

    public struct Summary: Sendable, Equatable {
        public var tensors: Int
        public var count: Int
        public var ones: Int
        public var density: Double { count == 0 ? 0 : Double(ones) / Double(count) }
    }

    /// Combines the masks at `inputs` (two or more, one base, the same rule for absent tensors) entry
    /// by entry. A tensor missing from an input counts as that input's absent-tensor rule (all 0 when
    /// frozen, all 1 when trainable), so the output covers every tensor of any input. Memory is one
    /// tensor's packed bits per input.
    @discardableResult
    public static func combine(_ operation: SetOperation, inputs: [String], output: String,
                               provenance: Provenance = Provenance()) throws -> Summary {
        guard inputs.count >= 2 else { throw LocusError(file: output, "a mask \(operation.rawValue) needs two or more input masks, got \(inputs.count)") }
        let readers = try inputs.map { try MaskReader(path: $0) }
        let first = readers[0]
        for r in readers.dropFirst() {
            guard r.baseFingerprint == first.baseFingerprint else {
                throw LocusError(file: r.path, object: "/@base-fingerprint",
                                 "is \(r.baseFingerprint), expected \(first.baseFingerprint) (the base of \(first.path)): masks of different models cannot be combined")
            }
            guard r.absentTensors == first.absentTensors else {
                throw LocusError(file: r.path, object: "/@absent-tensors",
                                 "is \(r.absentTensors.rawValue), expected \(first.absentTensors.rawValue) as in \(first.path)")
            }
        }
        // Every tensor of any input, in the spec's byte order, with one shape wherever it appears.
        var byKey: [[UInt8]: MaskTensor] = [:]
        for r in readers {
            for t in r.tensors {
                let key = TensorName.key(t.name)
                guard let seen = byKey[key] else { byKey[key] = t; continue }
                guard seen.shape == t.shape else {
                    throw LocusError(file: r.path, object: t.objectPath, "has shape \(t.shape), another input has \(seen.shape)")
                }
            }
        }
        let names = byKey.values.sorted { TensorName.byteOrder($0.name, $1.name) }
        var p = provenance
        p.inputs += try readers.map { Provenance.Input(role: "mask", path: $0.path, fingerprint: try $0.fingerprint()) }
        p.parameters["operation"] = .string(operation.rawValue)
        let w = try MaskWriter(path: output, baseFingerprint: first.baseFingerprint, absentTensors: first.absentTensors, provenance: p)
        // A tensor an input lacks counts as all-trainable or all-frozen, as that input's absent-tensors says.
        let absent: UInt8 = first.absentTensors == .trainable ? 0xFF : 0
        let apply: (inout UInt8, UInt8) -> Void
        switch operation {
        case .union: apply = { $0 |= $1 }
        case .intersection: apply = { $0 &= $1 }
        case .difference: apply = { $0 &= ~$1 }
        }
        var summary = Summary(tensors: 0, count: 0, ones: 0)
        for t in names {
            let bytes = BitPacking.byteCount(bits: t.count)
            let packed = try readers.map { r in try r.tensor(named: t.name).map { try r.readPacked($0) } ?? [UInt8](repeating: absent, count: bytes) }
            var out = packed[0]
            for other in packed.dropFirst() { for i in 0..<bytes { apply(&out[i], other[i]) } }
            if t.count % 8 != 0, bytes > 0 { out[bytes - 1] &= UInt8((1 << (t.count % 8)) - 1) }   // padding bits stay 0
            try w.add(name: t.name, shape: t.shape, packed: out)
            summary.tensors += 1; summary.count += t.count
            summary.ones += out.reduce(0) { $0 + $1.nonzeroBitCount }
        }
        try w.finish()
        return summary
    }

    /// Whether the top-k of `fromTaskVector` is taken over the whole model or tensor by tensor.
    public enum Scope: String, Sendable, CaseIterable { case global, local }

    /// The mask of the ⌊density · n⌋ entries of largest |τ| of the task vector at `taskVector`
    /// (over all its tensors, or per tensor with `.local`); ties, unstored entries (τ = 0)
    /// included, go by position, so the count is exact. This is the sparse support that
    /// Lottery Ticket Adaptation takes from a first fine-tuning run (Panda et al., 2024, "Lottery
    /// Ticket Adaptation: Mitigating Destructive Interference in LLMs", §3). The task vector's
    /// tensors get entries; other tensors of the base are absent (frozen). Streams each tensor in
    /// blocks of entries, twice (threshold by `RadixSelect`, then the bits).
    @discardableResult
    public static func fromTaskVector(_ taskVector: String, density: Double, scope: Scope = .global, output: String,
                                      provenance: Provenance = Provenance(), blockEntries: Int = 1 << 20,
                                      collectLimit: Int = 1 << 22) throws -> Summary {
        guard density > 0 && density <= 1 else { throw LocusError(file: output, "the density of a mask must be in (0, 1], got \(density)") }
        let tv = try TaskVectorReader(path: taskVector)
        let block = EntryBlock(capacity: blockEntries)
        let buffers = EntryStreamBuffers()
        /// |τ| of every entry of `t` (unstored ones as `zeros(n)`), in flat-index order.
        func forEachKey(_ tensors: [TaskVectorTensor], _ key: (UInt64) -> Void, _ zeros: (Int) -> Void) throws {
            for t in tensors {
                let stream = try TaskVectorEntryStream(tv, t, scale: tv.scale, buffers: buffers)
                while stream.position < t.count {
                    let start = stream.position, end = min(t.count, start + blockEntries)
                    block.count = 0
                    try stream.next(upTo: end, into: block)
                    for i in 0..<block.count { key(Double(block.values[i]).magnitude.bitPattern) }
                    zeros(end - start - block.count)
                }
            }
        }
        func threshold(_ tensors: [TaskVectorTensor]) throws -> TopKSelection {
            let total = tensors.reduce(0) { $0 + $1.count }
            let k = Int(density * Double(total))
            guard k > 0 else { return TopKSelection() }
            let (key, ties) = try RadixSelect.kthLargest(k, of: total, collectLimit: collectLimit) { try forEachKey(tensors, $0, $1) }
            return TopKSelection(thresholdKey: key, ties: ties)
        }
        var p = provenance
        p.inputs.append(Provenance.Input(role: "task-vector", path: tv.path, fingerprint: nil))
        p.parameters["density"] = .number(density)
        p.parameters["scope"] = .string(scope.rawValue)
        do {
            let w = try MaskWriter(path: output, baseFingerprint: tv.baseFingerprint, absentTensors: .frozen, provenance: p)
            var summary = Summary(tensors: 0, count: 0, ones: 0)
            var global = try scope == .global ? threshold(tv.tensors) : TopKSelection()
            var bits = [Bool](repeating: false, count: blockEntries)
            for t in tv.tensors {
                var top = try scope == .global ? global : threshold([t])
                try w.beginTensor(name: t.name, shape: t.shape)
                let stream = try TaskVectorEntryStream(tv, t, scale: tv.scale, buffers: buffers)
                while stream.position < t.count {
                    let start = stream.position, end = min(t.count, start + blockEntries)
                    block.count = 0
                    try stream.next(upTo: end, into: block)
                    var stored = 0
                    for i in 0..<(end - start) {
                        var key: UInt64 = 0
                        if stored < block.count && Int(block.offsets[stored]) == i { key = Double(block.values[stored]).magnitude.bitPattern; stored += 1 }
                        bits[i] = top.keeps(key)
                        if bits[i] { summary.ones += 1 }
                    }
                    try bits.withUnsafeBufferPointer { try w.appendBits(UnsafeBufferPointer(rebasing: $0[0..<(end - start)])) }
                }
                if scope == .global { global = top }
                summary.tensors += 1; summary.count += t.count
            }
            try w.finish()
            return summary
        }
    }
}
