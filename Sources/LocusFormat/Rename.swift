import Foundation

/// Renaming applied to a checkpoint source as it is read: first `stripPrefix` (tensors without
/// the prefix are dropped), then a built-in table, then ordered regex rules (first match wins).
/// A table may also change a shape when the bytes stay the same (e.g. `[D]` → `[1, 1, D]`).
public struct TensorRenaming: Sendable, Equatable {
    public var stripPrefix: String?
    public var table: RenameTable?
    public var rules: [RenameRule]
    public init(stripPrefix: String? = nil, table: RenameTable? = nil, rules: [RenameRule] = []) {
        self.stripPrefix = stripPrefix; self.table = table; self.rules = rules
    }

    public var isIdentity: Bool { (stripPrefix ?? "").isEmpty && table == nil && rules.isEmpty }

    /// The new name and shape of a tensor, or nil when it is dropped (no `stripPrefix`).
    public func apply(name: String, shape: [Int]) -> (name: String, shape: [Int])? {
        var n = name, s = shape
        if let p = stripPrefix, !p.isEmpty {
            guard n.hasPrefix(p) else { return nil }
            n = String(n.dropFirst(p.count))
        }
        if let table { (n, s) = table.rename(n, shape: s) }
        if let rule = rules.first(where: { $0.matches(n) }) { n = rule.rewrite(n) }
        return (n, s)
    }

    /// How the renaming is recorded in provenance (spec §1.2 parameters, key `source-renaming`).
    public var provenanceValue: JSONValue {
        var o: [String: JSONValue] = [:]
        if let stripPrefix { o["strip-prefix"] = .string(stripPrefix) }
        if let table { o["table"] = .string(table.rawValue) }
        if !rules.isEmpty { o["rules"] = .array(rules.map { .string("\($0.pattern) → \($0.replacement)") }) }
        return .object(o)
    }
}

/// Built-in renaming tables.
public enum RenameTable: String, Sendable, CaseIterable, Equatable {
    /// open_clip / OpenAI CLIP vision tower (after stripping `visual.`) → timm ViT names, as
    /// Locus's ViT uses them (docs/vit.md, docs/checkpoints.md).
    case openClipToTimm = "open_clip-to-timm"
    /// The inverse, for exporting a Locus/timm ViT to open_clip names.
    case timmToOpenClip = "timm-to-open_clip"

    /// Pairs of (open_clip suffix, timm suffix) inside a residual block.
    static let blockPairs: [(String, String)] = [
        ("ln_1.", "norm1."), ("ln_2.", "norm2."),
        ("attn.in_proj_weight", "attn.qkv.weight"), ("attn.in_proj_bias", "attn.qkv.bias"),
        ("attn.out_proj.", "attn.proj."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
    ]
    static let topPairs: [(String, String)] = [("conv1.", "patch_embed.proj."), ("ln_pre.", "norm_pre."), ("ln_post.", "norm.")]

    public func rename(_ name: String, shape: [Int]) -> (String, [Int]) {
        switch self {
        case .openClipToTimm:
            if name == "class_embedding" { return ("cls_token", shape.count == 1 ? [1, 1] + shape : shape) }
            if name == "positional_embedding" { return ("pos_embed", shape.count == 2 ? [1] + shape : shape) }
            for (a, b) in RenameTable.topPairs where name.hasPrefix(a) { return (b + name.dropFirst(a.count), shape) }
            let block = "transformer.resblocks."
            if name.hasPrefix(block), let (i, rest) = RenameTable.splitIndex(name.dropFirst(block.count)) {
                for (a, b) in RenameTable.blockPairs where rest.hasPrefix(a) { return ("blocks.\(i)." + b + rest.dropFirst(a.count), shape) }
            }
            return (name, shape)
        case .timmToOpenClip:
            if name == "cls_token" { return ("class_embedding", shape.count == 3 && shape[0] == 1 && shape[1] == 1 ? [shape[2]] : shape) }
            if name == "pos_embed" { return ("positional_embedding", shape.count == 3 && shape[0] == 1 ? Array(shape.dropFirst()) : shape) }
            for (a, b) in RenameTable.topPairs where name.hasPrefix(b) { return (a + name.dropFirst(b.count), shape) }
            if name.hasPrefix("blocks."), let (i, rest) = RenameTable.splitIndex(name.dropFirst("blocks.".count)) {
                for (a, b) in RenameTable.blockPairs where rest.hasPrefix(b) { return ("transformer.resblocks.\(i)." + a + rest.dropFirst(b.count), shape) }
            }
            return (name, shape)
        }
    }

    /// "12.rest" → (12, "rest").
    static func splitIndex(_ s: Substring) -> (Int, Substring)? {
        guard let dot = s.firstIndex(of: "."), let i = Int(s[..<dot]), i >= 0 else { return nil }
        return (i, s[s.index(after: dot)...])
    }
}

/// One line of a rules file: `REGEX → REPLACEMENT` (or `->`). The regex must match the whole
/// name; `$1`… in the replacement are its groups.
public struct RenameRule: @unchecked Sendable, Equatable {
    public let pattern: String
    public let replacement: String
    public let line: Int
    private let regex: NSRegularExpression

    public static func == (a: RenameRule, b: RenameRule) -> Bool { a.pattern == b.pattern && a.replacement == b.replacement && a.line == b.line }

    public init(pattern: String, replacement: String, line: Int, file: String) throws {
        self.pattern = pattern; self.replacement = replacement; self.line = line
        do { regex = try NSRegularExpression(pattern: "^(?:" + pattern + ")$") } catch {
            throw LocusError(file: file, object: "line \(line)", "'\(pattern)' is not a valid regular expression")
        }
        let groups = regex.numberOfCaptureGroups
        var i = replacement.startIndex
        while let d = replacement[i...].firstIndex(of: "$") {
            let digits = replacement[replacement.index(after: d)...].prefix { $0.isASCII && $0.isNumber }
            if let n = Int(digits), n > groups {
                throw LocusError(file: file, object: "line \(line)", "replacement uses $\(n) but the pattern has \(groups) group(s)")
            }
            i = replacement.index(after: d)
        }
    }

    func matches(_ name: String) -> Bool {
        regex.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
    }

    func rewrite(_ name: String) -> String {
        regex.stringByReplacingMatches(in: name, range: NSRange(name.startIndex..., in: name), withTemplate: replacement)
    }

    /// Parses a rules file: one rule a line; blank lines and lines starting with `#` are skipped.
    public static func parse(file: String) throws -> [RenameRule] {
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            throw LocusError(file: file, "cannot read the rename rules (expected UTF-8 text)")
        }
        return try parse(text: text, file: file)
    }

    public static func parse(text: String, file: String) throws -> [RenameRule] {
        var rules: [RenameRule] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let arrow = line.range(of: " → ") ?? line.range(of: " -> ")
            guard let arrow else {
                throw LocusError(file: file, object: "line \(i + 1)", "expected 'REGEX → REPLACEMENT' (or 'REGEX -> REPLACEMENT'), found '\(line)'")
            }
            let pattern = line[..<arrow.lowerBound].trimmingCharacters(in: .whitespaces)
            let replacement = line[arrow.upperBound...].trimmingCharacters(in: .whitespaces)
            guard !pattern.isEmpty, !replacement.isEmpty else {
                throw LocusError(file: file, object: "line \(i + 1)", "pattern and replacement must both be non-empty")
            }
            rules.append(try RenameRule(pattern: pattern, replacement: replacement, line: i + 1, file: file))
        }
        return rules
    }
}

/// A source seen through a renaming. Reshaped tensors (same bytes, new shape) are read whole.
public final class RenamedSource: CheckpointSource {
    public let base: any CheckpointSource
    public let renaming: TensorRenaming
    public let tensors: [CheckpointTensor]
    /// Tensors the renaming dropped (no prefix).
    public let droppedCount: Int
    private let original: [[UInt8]: CheckpointTensor]
    private let lazyFingerprint = LazyFingerprint()
    public var path: String { base.path }

    public init(_ base: any CheckpointSource, renaming: TensorRenaming) throws {
        self.base = base; self.renaming = renaming
        var map: [[UInt8]: CheckpointTensor] = [:], list: [CheckpointTensor] = [], dropped = 0
        for t in base.tensors {
            guard let (name, shape) = renaming.apply(name: t.name, shape: t.shape) else { dropped += 1; continue }
            if let problem = TensorName.problem(with: name) {
                throw LocusError(file: base.path, object: "tensor '\(t.name)'", "renamed to '\(name)': \(problem)")
            }
            guard checkedProduct(shape) == t.count else {
                throw LocusError(file: base.path, object: "tensor '\(t.name)'", "renaming changes shape \(t.shape) to \(shape), which holds a different number of elements")
            }
            if let other = map[TensorName.key(name)] {
                throw LocusError(file: base.path, object: "tensor '\(name)'", "both '\(other.name)' and '\(t.name)' are renamed to '\(name)'")
            }
            map[TensorName.key(name)] = t
            list.append(CheckpointTensor(name: name, link: TensorName.linkName(for: name), dtype: t.dtype, shape: shape, count: t.count))
        }
        if base.tensors.count > 0 && list.isEmpty {
            throw LocusError(file: base.path, "the renaming keeps none of its \(base.tensors.count) tensors (is the prefix to strip right?)")
        }
        original = map
        tensors = list.sorted { TensorName.byteOrder($0.name, $1.name) }
        droppedCount = dropped
    }

    private func source(_ t: CheckpointTensor) throws -> CheckpointTensor {
        guard let o = original[TensorName.key(t.name)] else {
            throw LocusError(file: path, object: "tensor '\(t.name)'", "is not a tensor of this checkpoint")
        }
        return o
    }

    public var fingerprintIsKnown: Bool { lazyFingerprint.isKnown }
    public var fingerprint: String { get throws { try lazyFingerprint.value { try computeFingerprint() } } }

    public func metadata() throws -> [String: String]? { try base.metadata() }
    public func architecture() throws -> String? { try base.architecture() }

    public func location(of t: CheckpointTensor) -> (file: String, object: String) {
        guard let o = original[TensorName.key(t.name)] else { return (path, "tensor '\(t.name)'") }
        let l = base.location(of: o)
        return (l.file, l.object + " (renamed '\(t.name)')")
    }

    public func readRows(_ t: CheckpointTensor, start: Int, count: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        let o = try source(t)
        if o.shape == t.shape { return try base.readRows(o, start: start, count: count, into: buffer) }
        let rows = t.shape.first ?? 1
        guard start >= 0, count >= 0, start <= rows, count <= rows - start, buffer.count == count * t.rowByteCount else {
            throw LocusError(file: path, object: "tensor '\(t.name)'", "rows \(start)..<\(start + count) do not fit shape \(t.shape)")
        }
        let raw = try base.readRaw(o)
        let lo = start * t.rowByteCount
        raw.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[lo..<(lo + buffer.count)])) }
    }

    public func forEachBlock(_ t: CheckpointTensor, blockBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let o = try source(t)
        if o.shape == t.shape { return try base.forEachBlock(o, blockBytes: blockBytes, body) }
        if t.count == 0 { return }
        try base.readRaw(o).withUnsafeBytes { try body($0) }
    }

    public func readRaw(_ t: CheckpointTensor, into buffer: UnsafeMutableRawBufferPointer) throws { try base.readRaw(try source(t), into: buffer) }
    public func readFloat32(_ t: CheckpointTensor) throws -> [Float] { try base.readFloat32(try source(t)) }
    public func readFloat64(_ t: CheckpointTensor) throws -> [Double] { try base.readFloat64(try source(t)) }
    public func readRowsFloat64(_ t: CheckpointTensor, start: Int, count: Int) throws -> [Double] {
        let o = try source(t)
        if o.shape == t.shape { return try base.readRowsFloat64(o, start: start, count: count) }
        var raw = [UInt8](repeating: 0, count: count * t.rowByteCount)
        try raw.withUnsafeMutableBytes { try readRows(t, start: start, count: count, into: $0) }
        return raw.withUnsafeBytes { HalfPrecision.decode64($0, dtype: t.dtype) }
    }
}
