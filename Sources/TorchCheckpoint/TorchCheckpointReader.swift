import OneLineText
/// Reads the tensors of a PyTorch checkpoint written by `torch.save` (the zip format of torch
/// 1.6 and later) without Python and without executing anything from the file.
///
/// At init the zip central directory is checked, `data.pkl` is interpreted by a restricted
/// unpickler (see docs/torch-checkpoints.md for the allowed globals), the state dict is located,
/// and every tensor's view is checked against its storage member. Tensor bytes are read later, on
/// demand, with `pread` from the storage members in place; the file is never loaded whole.
///
/// Entries are plain values; `read` accepts only entries of this reader. All state is immutable and
/// reads do not move a shared file position, so one reader may serve several threads.
public final class TorchCheckpointReader: @unchecked Sendable {
    /// The largest `data.pkl` read (a state dict's pickle takes ~200 bytes per tensor).
    public static let maxPickleBytes = 256 << 20

    public let path: String
    /// The state dict's tensors, in the pickle's order.
    public let entries: [TorchTensorEntry]
    /// The zip members' directory prefix (torch uses the file's stem or "archive"), without "/".
    public let archiveName: String
    /// The dotted path of the dict the entries come from ("" for the top level).
    public let containerKey: String

    private let file: CheckpointFile
    private let layouts: [String: TensorLayout]
    private let indexByName: [String: Int]

    /// Where a tensor's elements lie in the file.
    struct TensorLayout {
        /// Absolute file offset of the storage's first byte.
        let storageFileOffset: Int
        let storageMember: String
        /// Offset of the view's first element, in elements of the tensor's dtype.
        let elementOffset: Int
        let shape: [Int]
        let strides: [Int]
    }

    /// Opens and checks `path`.
    /// - Parameter key: which dict of a nested checkpoint holds the tensors, as a dotted path of
    ///   keys ("state_dict", "model", "ema.model"); "" means the top level. With nil the dict is
    ///   found automatically when exactly one dict in the checkpoint holds tensors.
    public init(path: String, key: String? = nil) throws {
        let file = try CheckpointFile(path: path)
        self.file = file
        self.path = path

        let magic = try file.readBytes(count: min(file.byteCount, 32), at: 0) { "the first bytes of the file" }
        guard magic.count >= 4, magic[0] == 0x50, magic[1] == 0x4B, magic[2] == 0x03, magic[3] == 0x04 else {
            if Self.hasLegacyMagic(magic) {
                throw TorchCheckpointError.unsupportedFormat(
                    path: path,
                    message: "a checkpoint in torch's legacy format (before torch 1.6) is not read; re-save it with a current torch: "
                        + "torch.save(torch.load(path, weights_only=True), new_path)")
            }
            throw TorchCheckpointError.unsupportedFormat(
                path: path, message: "not a PyTorch checkpoint: neither a zip archive (torch.save since 1.6) nor torch's legacy pickle")
        }
        let archive = try ZipArchive(file: file)
        let archiveName = try Self.archiveName(of: archive)
        self.archiveName = archiveName
        let prefix = archiveName + "/"

        if let byteOrderMember = archive.member(named: prefix + "byteorder") {
            let byteOrder = try archive.contents(of: byteOrderMember, limit: 64)
            switch byteOrder {
            case Array("little".utf8): break
            case Array("big".utf8):
                throw TorchCheckpointError.unsupportedFormat(
                    path: path,
                    message: "the checkpoint was written on a big-endian machine (\(quoted(byteOrderMember.name)) says \"big\"); "
                        + "only little-endian checkpoints are read: load and re-save it on a little-endian machine")
            default:
                throw TorchCheckpointError.archive(path: path, member: byteOrderMember.name, message: "holds neither \"little\" nor \"big\"")
            }
        }

        guard let pickleMember = archive.member(named: prefix + "data.pkl") else {
            throw TorchCheckpointError.archive(path: path, member: prefix + "data.pkl", message: "is missing")
        }
        let pickle = try archive.contents(of: pickleMember, limit: Self.maxPickleBytes)
        let unpickler = RestrictedUnpickler(bytes: pickle, path: path, member: pickleMember.name)
        let root = try unpickler.run()

        let (chosenKey, dict) = try Self.stateDict(in: root, key: key, path: path)
        self.containerKey = chosenKey

        var entries: [TorchTensorEntry] = []
        var layouts: [String: TensorLayout] = [:]
        var indexByName: [String: Int] = [:]
        var storageOffsets: [String: (offset: Int, byteCount: Int, dtype: TorchDType)] = [:]
        for (dictKey, value) in zip(dict.keys, dict.values) {
            guard case .tensor(let tensor) = value else { continue }  // _metadata, ints, None, sub-dicts
            let name = dictKey.description
            func fail(_ message: String) -> TorchCheckpointError { .tensor(path: path, name: name, message: message) }
            guard indexByName[name] == nil else {
                throw fail("appears twice (as an integer and as a string key)")
            }
            let memberName = prefix + "data/" + tensor.storage.key

            // The storage: a stored (uncompressed) member at least as long as the pickle says.
            let storage: (offset: Int, byteCount: Int, dtype: TorchDType)
            if let known = storageOffsets[tensor.storage.key] {
                guard known.dtype == tensor.storage.dtype else {
                    throw fail("storage \(quoted(memberName)) is declared as \(known.dtype.rawValue) by another tensor and as \(tensor.storage.dtype.rawValue) here")
                }
                storage = known
            } else {
                guard let member = archive.member(named: memberName) else {
                    throw fail("its storage member \(quoted(memberName)) is missing from the archive")
                }
                guard member.method == 0 else {
                    throw fail("its storage member \(quoted(memberName)) is compressed (method \(member.method)); torch.save stores storages uncompressed, so re-save the file with torch.save")
                }
                guard member.compressedSize == member.uncompressedSize else {
                    throw fail("its storage member \(quoted(memberName)) is stored but its sizes differ (\(member.compressedSize) vs \(member.uncompressedSize))")
                }
                let (declared, overflow) = tensor.storage.elementCount.multipliedReportingOverflow(by: tensor.storage.dtype.byteSize)
                guard !overflow, declared <= member.uncompressedSize else {
                    throw fail("storage \(quoted(memberName)) holds \(member.uncompressedSize) bytes, but the pickle declares \(tensor.storage.elementCount) elements of \(tensor.storage.dtype.rawValue)")
                }
                storage = (try archive.dataOffset(of: member), declared, tensor.storage.dtype)
                storageOffsets[tensor.storage.key] = storage
            }

            // The view: element count, and the furthest element it touches, inside the storage.
            var elementCount = 1
            for size in tensor.shape {
                let (product, overflow) = elementCount.multipliedReportingOverflow(by: size)
                guard !overflow else { throw fail("size \(tensor.shape) has more elements than can be counted") }
                elementCount = product
            }
            let (byteCount, byteOverflow) = elementCount.multipliedReportingOverflow(by: tensor.dtype.byteSize)
            guard !byteOverflow else { throw fail("size \(tensor.shape) has more bytes than can be counted") }
            if elementCount > 0 {
                var last = tensor.storageOffset
                for (size, stride) in zip(tensor.shape, tensor.strides) {
                    let (step, overflowA) = (size - 1).multipliedReportingOverflow(by: stride)
                    let (sum, overflowB) = last.addingReportingOverflow(step)
                    guard !overflowA, !overflowB else { throw fail("size \(tensor.shape) and stride \(tensor.strides) overflow") }
                    last = sum
                }
                let storageElements = storage.byteCount / tensor.dtype.byteSize
                guard last < storageElements else {
                    throw fail(
                        "storage \(quoted(memberName)) is too short for the view: offset \(tensor.storageOffset), size \(tensor.shape), stride \(tensor.strides) "
                            + "reach element \(last), but the storage holds \(storageElements) elements of \(tensor.dtype.rawValue)")
                }
            }
            indexByName[name] = entries.count
            entries.append(TorchTensorEntry(name: name, dtype: tensor.dtype, shape: tensor.shape, elementCount: elementCount, byteCount: byteCount))
            layouts[name] = TensorLayout(
                storageFileOffset: storage.offset, storageMember: memberName, elementOffset: tensor.storageOffset,
                shape: tensor.shape, strides: tensor.strides)
        }
        self.entries = entries
        self.layouts = layouts
        self.indexByName = indexByName
    }

    public func entry(named name: String) -> TorchTensorEntry? {
        indexByName[name].map { entries[$0] }
    }

    /// Reads the tensor's contiguous row-major little-endian bytes into `buffer`, which must be
    /// exactly `entry.byteCount` bytes.
    public func read(_ entry: TorchTensorEntry, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard buffer.count == entry.byteCount else {
            throw TorchCheckpointError.tensor(
                path: path, name: entry.name, message: "buffer is \(buffer.count) bytes but the tensor needs \(entry.byteCount) bytes")
        }
        try read(entry, fromByte: 0, into: buffer)
    }

    /// The tensor's contiguous row-major little-endian bytes as a new array.
    public func readBytes(_ entry: TorchTensorEntry) throws -> [UInt8] {
        // Check before allocating: a foreign entry could claim any size.
        guard let index = indexByName[entry.name], entries[index] == entry else {
            throw TorchCheckpointError.tensor(path: path, name: entry.name, message: "the entry does not belong to this file (it comes from another reader)")
        }
        return try [UInt8](unsafeUninitializedCapacity: entry.byteCount) { buffer, initializedCount in
            try read(entry, into: UnsafeMutableRawBufferPointer(buffer))
            initializedCount = entry.byteCount
        }
    }

    /// Reads `buffer.count` bytes of the tensor's contiguous row-major layout from byte `start`, so
    /// big tensors can be streamed in blocks. Strided views are gathered; for them each call reads
    /// the part of the storage its block spans.
    public func read(_ entry: TorchTensorEntry, fromByte start: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let index = indexByName[entry.name], entries[index] == entry, let layout = layouts[entry.name] else {
            throw TorchCheckpointError.tensor(path: path, name: entry.name, message: "the entry does not belong to this file (it comes from another reader)")
        }
        guard start >= 0, start <= entry.byteCount, buffer.count <= entry.byteCount - start else {
            throw TorchCheckpointError.tensor(
                path: path, name: entry.name,
                message: "byte range [\(start), +\(buffer.count)) is outside the tensor's \(entry.byteCount) bytes")
        }
        if buffer.count == 0 { return }
        let elementSize = entry.dtype.byteSize
        let (shape, strides) = Self.simplified(shape: layout.shape, strides: layout.strides)
        let what = { "tensor \(quoted(entry.name)) in \(quoted(layout.storageMember))" }
        // Cannot overflow: the view's last element was checked to lie inside the storage member.
        if strides.isEmpty || (strides.count == 1 && strides[0] == 1) {
            try file.read(into: buffer, at: layout.storageFileOffset + layout.elementOffset * elementSize + start, what: what)
            return
        }
        let firstElement = start / elementSize
        let endElement = (start + buffer.count + elementSize - 1) / elementSize
        let aligned = start % elementSize == 0 && buffer.count % elementSize == 0
        if aligned {
            try gather(layout, shape: shape, strides: strides, elementSize: elementSize, elements: firstElement..<endElement, into: buffer, what: what)
        } else {
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: (endElement - firstElement) * elementSize, alignment: 16)
            defer { scratch.deallocate() }
            try gather(layout, shape: shape, strides: strides, elementSize: elementSize, elements: firstElement..<endElement, into: scratch, what: what)
            let skip = start - firstElement * elementSize
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: scratch[skip..<skip + buffer.count]))
        }
    }

    /// Drops size-1 dimensions and merges dimensions that are contiguous with each other, so a
    /// contiguous view of any shape becomes `[n]` with stride `[1]`.
    static func simplified(shape: [Int], strides: [Int]) -> (shape: [Int], strides: [Int]) {
        var outShape: [Int] = []
        var outStrides: [Int] = []
        for (size, stride) in zip(shape, strides) where size != 1 {
            // Overflow-checked although the view was validated: a wrapped product must not merge.
            let (span, overflow) = stride.multipliedReportingOverflow(by: size)
            if let lastStride = outStrides.last, let lastSize = outShape.last, !overflow, lastStride == span {
                outShape[outShape.count - 1] = lastSize * size
                outStrides[outStrides.count - 1] = stride
            } else {
                outShape.append(size)
                outStrides.append(stride)
            }
        }
        return (outShape, outStrides)
    }

    /// Copies row-major elements `elements` of a strided view into `output`: reads the storage span
    /// those elements can touch (bounded by the outermost dimension's index range) in one `pread`,
    /// then walks the view with a multi-index.
    private func gather(
        _ layout: TensorLayout, shape: [Int], strides: [Int], elementSize: Int, elements: Range<Int>,
        into output: UnsafeMutableRawBufferPointer, what: () -> String
    ) throws {
        let rank = shape.count
        // Row-major index of the first element, and the outermost index of the last one.
        var index = [Int](repeating: 0, count: rank)
        var remainder = elements.lowerBound
        for dimension in stride(from: rank - 1, through: 0, by: -1) {
            index[dimension] = remainder % shape[dimension]
            remainder /= shape[dimension]
        }
        let innerCount = shape[1...].reduce(1, *)
        let firstOuter = elements.lowerBound / innerCount
        let lastOuter = (elements.upperBound - 1) / innerCount
        var innerSpan = 0
        for dimension in 1..<rank { innerSpan += (shape[dimension] - 1) * strides[dimension] }
        let spanStart = layout.elementOffset + firstOuter * strides[0]
        let spanEnd = layout.elementOffset + lastOuter * strides[0] + innerSpan  // inclusive
        let span = UnsafeMutableRawBufferPointer.allocate(byteCount: (spanEnd - spanStart + 1) * elementSize, alignment: 16)
        defer { span.deallocate() }
        try file.read(into: span, at: layout.storageFileOffset + spanStart * elementSize, what: what)

        var source = layout.elementOffset - spanStart
        for dimension in 0..<rank { source += index[dimension] * strides[dimension] }
        let source0 = UnsafeRawPointer(span.baseAddress!)
        let target0 = output.baseAddress!
        let last = rank - 1
        let innerSize = shape[last]
        let innerStride = strides[last]
        var written = 0
        let total = elements.count
        while written < total {
            // Run along the innermost dimension, then carry into the outer ones.
            let run = min(innerSize - index[last], total - written)
            Self.copyStrided(
                from: source0 + source * elementSize, stride: innerStride * elementSize, to: target0 + written * elementSize,
                count: run, elementSize: elementSize)
            written += run
            source += run * innerStride
            index[last] += run
            var dimension = last
            while dimension > 0 && index[dimension] == shape[dimension] {
                source -= shape[dimension] * strides[dimension]
                index[dimension] = 0
                dimension -= 1
                index[dimension] += 1
                source += strides[dimension]
            }
        }
    }

    private static func copyStrided(from source: UnsafeRawPointer, stride: Int, to target: UnsafeMutableRawPointer, count: Int, elementSize: Int) {
        if stride == elementSize {
            target.copyMemory(from: source, byteCount: count * elementSize)
            return
        }
        switch elementSize {
        case 1: for i in 0..<count { target.storeBytes(of: source.load(fromByteOffset: i * stride, as: UInt8.self), toByteOffset: i, as: UInt8.self) }
        case 2: for i in 0..<count { target.storeBytes(of: source.loadUnaligned(fromByteOffset: i * stride, as: UInt16.self), toByteOffset: i * 2, as: UInt16.self) }
        case 4: for i in 0..<count { target.storeBytes(of: source.loadUnaligned(fromByteOffset: i * stride, as: UInt32.self), toByteOffset: i * 4, as: UInt32.self) }
        default: for i in 0..<count { target.storeBytes(of: source.loadUnaligned(fromByteOffset: i * stride, as: UInt64.self), toByteOffset: i * 8, as: UInt64.self) }
        }
    }

    // MARK: Format detection

    /// Whether the file looks like a checkpoint this reader is meant for: a zip archive with a
    /// `<name>/data.pkl` member, or torch's legacy pickle (which `init` then refuses clearly).
    /// Never throws; unreadable files are simply not checkpoints.
    public static func isTorchCheckpoint(path: String) -> Bool {
        guard let file = try? CheckpointFile(path: path),
            let magic = try? file.readBytes(count: min(file.byteCount, 32), at: 0, what: { "" })
        else { return false }
        if magic.count >= 4, magic[0] == 0x50, magic[1] == 0x4B, magic[2] == 0x03, magic[3] == 0x04 {
            // TorchScript archives count too: they are torch files, and `init` explains how to
            // re-save them.
            guard let archive = try? ZipArchive(file: file) else { return false }
            return archive.members.contains { member in
                let parts = member.name.split(separator: "/", omittingEmptySubsequences: false)
                return parts.count == 2 && parts[1] == "data.pkl" && !parts[0].isEmpty
            }
        }
        return hasLegacyMagic(magic)
    }

    /// torch's legacy format starts with its magic number 0x1950a86a20f9469cfc6c pickled as LONG1,
    /// right after PROTO (and a FRAME for protocol 4 and later).
    private static func hasLegacyMagic(_ bytes: [UInt8]) -> Bool {
        let pickled: [UInt8] = [0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
        guard bytes.count >= 2 + pickled.count, bytes[0] == 0x80 else { return false }
        if Array(bytes[2..<2 + pickled.count]) == pickled { return true }
        return bytes.count >= 11 + pickled.count && bytes[2] == 0x95 && Array(bytes[11..<11 + pickled.count]) == pickled
    }

    /// The one top-level directory holding `data.pkl`; TorchScript archives are refused.
    private static func archiveName(of archive: ZipArchive) throws -> String {
        let path = archive.file.path
        var names: [String] = []
        for member in archive.members {
            let parts = member.name.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, parts[1] == "data.pkl", !parts[0].isEmpty else { continue }
            names.append(String(parts[0]))
        }
        guard !names.isEmpty else {
            throw TorchCheckpointError.unsupportedFormat(
                path: path, message: "a zip archive without <name>/data.pkl: not a checkpoint written by torch.save")
        }
        guard names.count == 1 else {
            throw TorchCheckpointError.unsupportedFormat(
                path: path, message: "the zip archive holds \(names.count) data.pkl members (\(names.prefix(5).map(quoted).joined(separator: ", "))); torch.save writes one")
        }
        let name = names[0]
        if archive.member(named: name + "/constants.pkl") != nil
            || archive.members.contains(where: { $0.name.hasPrefix(name + "/code/") })
        {
            throw TorchCheckpointError.unsupportedFormat(
                path: path,
                message: "a TorchScript archive (torch.jit.save) is not read: load it in Python and save its weights with "
                    + "torch.save(torch.jit.load(path).state_dict(), new_path)")
        }
        return name
    }

    // MARK: Finding the state dict

    /// The dict whose tensors are the entries, and its dotted key.
    private static func stateDict(in root: PickleValue, key: String?, path: String) throws -> (String, PickleDict) {
        guard case .dict(let rootDict) = root else {
            throw TorchCheckpointError.container(
                path: path, message: "the checkpoint holds \(root.kind), not a dict of tensors; save a state dict: torch.save(model.state_dict(), path)")
        }
        if let key {
            var budget = 10_000
            return (key, try resolve(key, in: rootDict, prefix: "", path: path, budget: &budget))
        }
        var candidates: [(String, PickleDict)] = []
        var visited = Set<ObjectIdentifier>()
        func visit(_ dict: PickleDict, _ dottedKey: String) {
            guard visited.insert(ObjectIdentifier(dict)).inserted else { return }
            var holdsTensors = false
            for (childKey, value) in zip(dict.keys, dict.values) {
                switch value {
                case .tensor: holdsTensors = true
                case .dict(let child): visit(child, dottedKey.isEmpty ? childKey.description : dottedKey + "." + childKey.description)
                default: break
                }
            }
            if holdsTensors { candidates.append((dottedKey, dict)) }
        }
        visit(rootDict, "")
        guard candidates.count == 1 else {
            if candidates.isEmpty {
                throw TorchCheckpointError.container(path: path, message: "the checkpoint holds no tensors (no dict in it has a tensor value)")
            }
            let listed = candidates.prefix(20).map { $0.0.isEmpty ? "'' (top level)" : quoted($0.0) }.joined(separator: ", ")
            throw TorchCheckpointError.container(
                path: path,
                message: "\(candidates.count) dicts hold tensors: \(listed)\(candidates.count > 20 ? ", …" : ""); pass the key of the state dict to read")
        }
        return candidates[0]
    }

    /// Follows a dotted key: at each level an exact key wins, then the longest key followed by ".".
    private static func resolve(_ key: String, in dict: PickleDict, prefix: String, path: String, budget: inout Int) throws -> PickleDict {
        if key.isEmpty { return dict }
        // Dotted keys that match in many ways could otherwise make the search exponential.
        budget -= 1
        guard budget > 0 else {
            throw TorchCheckpointError.container(path: path, message: "key \(quoted(key)) matches the checkpoint's keys in too many ways to follow")
        }
        var matches: [(DictKey, String)] = []
        for childKey in dict.keys {
            let text = childKey.description
            if text == key {
                matches = [(childKey, "")]
                break
            }
            if key.hasPrefix(text + ".") { matches.append((childKey, String(key.dropFirst(text.count + 1)))) }
        }
        // Longest key first; if its path does not lead anywhere, a shorter key may (keys are kept
        // verbatim, so "a.b" as one key and "a" → "b" are different paths).
        var firstFailure: Error?
        for (childKey, rest) in matches.sorted(by: { $0.1.count < $1.1.count }) {
            guard let value = dict.value(for: childKey) else { continue }
            let here = prefix.isEmpty ? childKey.description : prefix + "." + childKey.description
            do {
                guard case .dict(let child) = value else {
                    throw TorchCheckpointError.container(path: path, message: "key \(quoted(here)) holds \(value.kind), not a dict of tensors")
                }
                return try resolve(rest, in: child, prefix: here, path: path, budget: &budget)
            } catch {
                if firstFailure == nil { firstFailure = error }
            }
        }
        if let firstFailure { throw firstFailure }
        let available = dict.keys.prefix(20).map { quoted($0.description) }.joined(separator: ", ")
        throw TorchCheckpointError.container(
            path: path,
            message: "no key \(quoted(prefix.isEmpty ? key : prefix + "." + key)) in the checkpoint; \(prefix.isEmpty ? "top-level" : quoted(prefix)) keys: \(available)\(dict.keys.count > 20 ? ", …" : "")")
    }
}
