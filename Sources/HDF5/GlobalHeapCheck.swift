import CHDF5
#if canImport(Glibc)
import Glibc
#endif

/// Checks the structure of every global heap collection in a file before libhdf5 reads one.
///
/// Variable-length strings (the attributes and string datasets every HDF5 layout uses) live in
/// global heap collections ("GCOL" blocks). No version of the format checksums them, and
/// libhdf5 1.10 trusts them: a corrupt object size makes it loop forever while loading the
/// collection, and a corrupt object index makes it read through a null pointer. So before any
/// string is read, this check finds each collection and verifies what libhdf5 relies on:
/// version 1, a size inside the file, and objects that tile the collection exactly, with
/// indices unique and without gaps (1…n, which is what writers that never delete produce).
///
/// Collections are found by their signature, searching the file outside the raw data of its
/// datasets (whose extents HDF5 reports without reading any string), so the cost follows the
/// size of the metadata, not of the tensors.
public enum GlobalHeapCheck {
    /// A structural problem, with the byte offset of the collection.
    public struct Problem: Error, CustomStringConvertible, Sendable {
        public var offset: Int
        public var message: String
        /// Negative for a problem that is not inside one collection.
        public var description: String {
            offset < 0 ? "\(message) (the file is corrupt)" : "global heap collection at byte \(offset): \(message) (the file is corrupt)"
        }
    }

    /// Verifies every collection of `file`; throws the first problem found.
    public static func verify(_ file: File) throws {
        guard let fd = file.descriptor else { return }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        let size = Int(st.st_size)
        let objects = FileObjects(try file.root)
        // The gaps between raw extents are where metadata (and so every collection) lives.
        var gaps: [(Int, Int)] = []
        var at = 0
        // Extents come from the file: clamp them to it before any arithmetic.
        for (start, length) in objects.rawExtents.sorted(by: { $0.offset < $1.offset }) where length > 0 && start >= 0 && start < size {
            if start > at { gaps.append((at, start)) }
            at = max(at, start + min(length, size - start))
        }
        if at < size { gaps.append((at, size)) }
        var collections: [Int: [Int: Int]] = [:]
        // One buffer for every gap, no larger than the largest window a gap needs: a file has a
        // gap between every two datasets, and zeroing a fresh megabyte for each cost more than the scan.
        let longest = gaps.reduce(0) { max($0, $1.1 - $1.0) }
        var buffer = [UInt8](repeating: 0, count: min(scanWindow + 3, longest))
        for (start, end) in gaps where end - start >= 4 {
            try scan(fd, from: start, to: end, fileSize: size, buffer: &buffer, into: &collections)
        }
        try ObjectHeaderCheck(fd: fd, fileSize: size, collections: collections).verify(objects)
    }

    static let scanWindow = 1 << 20

    /// Finds and verifies every collection in [start, end); records each one's objects (index → size).
    /// `buffer` is scratch of at least min(scanWindow + 3, end − start) bytes.
    static func scan(_ fd: Int32, from start: Int, to end: Int, fileSize: Int, buffer: inout [UInt8],
                     into collections: inout [Int: [Int: Int]]) throws {
        var position = start
        while position < end {
            let want = min(scanWindow + 3, end - position, buffer.count)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(position)) }
            guard got >= 4 else { return }
            // memchr skips to each "G" at memory speed; most gaps hold no collection.
            var hits: [Int] = []
            buffer.withUnsafeBytes { b in
                let base = b.baseAddress!
                var i = 0
                while i + 4 <= got, let p = memchr(base + i, 0x47, got - 3 - i) {
                    let at = base.distance(to: UnsafeRawPointer(p))
                    if b[at + 1] == 0x43, b[at + 2] == 0x4F, b[at + 3] == 0x4C { hits.append(at) }   // "GCOL"
                    i = at + 1
                }
            }
            for i in hits {
                if let objects = try verifyCollection(fd, at: position + i, fileSize: fileSize) { collections[position + i] = objects }
            }
            position += max(1, got - 3)
        }
    }

    /// The layout (HDF5 format spec, "Global Heap"): "GCOL", version 1, 3 reserved bytes, the
    /// collection size (8 bytes), then objects: index (2), reference count (2), reserved (4),
    /// size (8), data padded to 8 bytes. Index 0 is the free space and ends the collection.
    static func verifyCollection(_ fd: Int32, at offset: Int, fileSize: Int) throws -> [Int: Int]? {
        var header = [UInt8](repeating: 0, count: 16)
        guard header.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, 16, off_t(offset)) }) == 16, header[4] == 1 else {
            return nil   // not a collection header (the bytes "GCOL" inside other data)
        }
        // Collections hold short strings; 256 MiB is far above any a layout writes, and bounds what a corrupt size can allocate.
        guard let size = ObjectHeaderCheck.little(header, 8, 8), size >= 4096, size <= min(fileSize, 1 << 28), offset <= fileSize - size else {
            throw Problem(offset: offset, message: "its size does not fit in the \(fileSize)-byte file")
        }
        var body = [UInt8](repeating: 0, count: size)
        guard body.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, size, off_t(offset)) }) == size else {
            throw Problem(offset: offset, message: "cannot read its \(size) bytes")
        }
        var at = 16
        var seen: [Int: Int] = [:]
        while at < size {
            guard size - at >= 16 else { break }   // too small for an object header: free space
            guard let index = ObjectHeaderCheck.little(body, at, 2), let objectSize = ObjectHeaderCheck.little(body, at + 8, 8) else {
                throw Problem(offset: offset, message: "object at byte \(at) has a size beyond any file")
            }
            if index == 0 {
                // The free-space object covers the rest of the collection, header included.
                guard objectSize == size - at else {
                    throw Problem(offset: offset, message: "free space of \(objectSize) bytes at byte \(at) does not end the collection")
                }
                break
            }
            guard objectSize <= size - at - 16, (objectSize + 7) / 8 * 8 <= size - at - 16 else {
                throw Problem(offset: offset, message: "object \(index) of \(objectSize) bytes overruns the collection")
            }
            guard seen.updateValue(objectSize, forKey: index) == nil else { throw Problem(offset: offset, message: "object index \(index) appears twice") }
            at += 16 + (objectSize + 7) / 8 * 8
        }
        if let top = seen.keys.max(), top != seen.count {
            throw Problem(offset: offset, message: "object indices skip (\(seen.count) objects, the highest index is \(top))")
        }
        return seen
    }
}

/// What the checks need from the file's objects, gathered in one walk that reads no string: the
/// raw data extents of every dataset (a contiguous block, or each chunk; compact data lives in the
/// object header), every object header's address, and the contiguous string datasets, whose data
/// are heap references.
struct FileObjects {
    var rawExtents: [(offset: Int, length: Int)] = []
    var headerAddresses: [Int] = []
    var stringDatasets: [(path: String, offset: Int, storage: Int, count: Int)] = []

    init(_ root: Group) { walk(root, depth: 0) }

    private mutating func walk(_ group: Group, depth: Int) {
        guard depth <= 8 else { return }   // the layout nests three deep; deeper is a link pointing up
        record(group.id)
        guard let names = try? group.childNames() else { return }
        for name in names {
            switch try? group.openChild(name) {
            case .group(let g): walk(g, depth: depth + 1)
            case .dataset(let ds): withExtendedLifetime(ds) { add(ds) }   // its id is used by the C calls below
            default: continue
            }
        }
    }

    private mutating func record(_ id: hid_t) {
        HDF5Library.silence()
        var info = H5O_info_t()
        guard H5Oget_info2(id, &info, UInt32(H5O_INFO_BASIC)) >= 0 else { _ = HDF5Library.takeErrorStack(); return }
        headerAddresses.append(Int(clamping: info.addr))
    }

    private mutating func add(_ ds: Dataset) {
        record(ds.id)
        if let offset = ds.dataOffset {
            rawExtents.append((offset, ds.storageSize))
            let type = ds.type   // held: its id must stay open for the call below
            if withExtendedLifetime(type, { H5Tis_variable_str(type.id) > 0 }) {
                stringDatasets.append((ds.path, offset, ds.storageSize, ds.elementCount))
            }
            return
        }
        HDF5Library.silence()
        let space = H5Dget_space(ds.id)
        defer { if space >= 0 { H5Sclose(space) } }
        var count: hsize_t = 0
        guard space >= 0, H5Dget_num_chunks(ds.id, space, &count) >= 0, count < (1 << 24) else {
            _ = HDF5Library.takeErrorStack(); return
        }
        for i in 0..<count {
            var mask: UInt32 = 0
            var address: haddr_t = 0, bytes: hsize_t = 0
            guard H5Dget_chunk_info(ds.id, space, i, nil, &mask, &address, &bytes) >= 0 else {
                _ = HDF5Library.takeErrorStack(); return
            }
            rawExtents.append((Int(clamping: address), Int(clamping: bytes)))
        }
    }
}

/// Checks the references into the global heap that variable-length values hold: each one must
/// name a verified collection and an object that exists in it, at least as long as the value.
/// libhdf5 follows them without checks (an index past the collection's objects reads through a
/// null pointer). Version-2 object headers ("OHDR") carry a checksum that libhdf5 verifies, so
/// only version-1 headers — what HDF5's `earliest` format bound writes — are parsed here
/// (HDF5 format specification, "Version 1 Data Object Header Prefix", "Attribute Message",
/// "Datatype Message", "Dataspace Message"). A header that does not parse as expected is left
/// to libhdf5, which rejects malformed headers itself.
struct ObjectHeaderCheck {
    let fd: Int32
    let fileSize: Int
    let collections: [Int: [Int: Int]]
    typealias Problem = GlobalHeapCheck.Problem

    func verify(_ objects: FileObjects) throws {
        for address in objects.headerAddresses { try verifyHeader(at: address) }
        for d in objects.stringDatasets {
            // libhdf5 reads one reference per element of the dataspace, whatever the layout says is stored.
            guard d.count <= 1 << 20, d.count * 16 <= d.storage, let raw = read(d.offset, d.count * 16) else {
                throw Problem(offset: -1, message: "\(d.path) stores \(d.storage) bytes of string references for \(d.count) strings")
            }
            try verifyReferences(raw, count: d.count, object: d.path)
        }
    }

    func read(_ offset: Int, _ count: Int) -> [UInt8]? {
        guard offset >= 0, count >= 0, offset <= fileSize, count <= fileSize - offset else { return nil }
        var bytes = [UInt8](repeating: 0, count: count)
        guard bytes.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, count, off_t(offset)) }) == count else { return nil }
        return bytes
    }

    static func little(_ b: [UInt8], _ at: Int, _ width: Int) -> Int? {
        guard at >= 0, width <= 8, at + width <= b.count else { return nil }
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(b[at + i]) }
        return v > UInt64(Int.max) ? nil : Int(v)
    }

    func verifyHeader(at address: Int) throws {
        guard let prefix = read(address, 16), prefix[0] == 1, prefix[1] == 0,
              let messages = Self.little(prefix, 2, 2), let size = Self.little(prefix, 8, 4) else { return }
        // Chunks: the first follows the 16-byte prefix; continuation messages (type 0x10) add more.
        var chunks = [(address + 16, size)], seenMessages = 0, visited = 0
        while let (start, length) = chunks.popLast(), visited < 64 {
            visited += 1
            guard length <= 1 << 26, let chunk = read(start, length) else { return }
            var at = 0
            while at + 8 <= chunk.count, seenMessages < messages {
                guard let type = Self.little(chunk, at, 2), let dataSize = Self.little(chunk, at + 2, 2) else { return }
                let flags = chunk[at + 4]
                let data = at + 8
                guard data + dataSize <= chunk.count else { return }
                seenMessages += 1
                if type == 0x10, let o = Self.little(chunk, data, 8), let l = Self.little(chunk, data + 8, 8) {
                    chunks.append((o, l))
                } else if type == 0x0C, flags & 0x02 == 0 {
                    try verifyAttribute(Array(chunk[data..<(data + dataSize)]), object: "object at byte \(address)")
                } else if type == 0x03, flags & 0x02 == 0, dataSize >= 16, chunk[data] & 0x0F == 9, chunk[data + 1] & 0x0F == 1,
                          let baseSize = Self.little(chunk, data + 12, 4), baseSize != 1 {
                    // A dataset's variable-length string type: libhdf5 allocates length × base size per
                    // element, and the references were checked for 1-byte characters.
                    throw Problem(offset: -1, message: "object at byte \(address): a string dataset with \(baseSize)-byte characters")
                }
                at = data + dataSize
            }
        }
    }

    /// An attribute message (versions 1–3): its datatype, dataspace and, for a variable-length
    /// type, the heap reference of each element.
    func verifyAttribute(_ m: [UInt8], object: String) throws {
        guard m.count >= 8, let nameSize = Self.little(m, 2, 2), let typeSize = Self.little(m, 4, 2),
              let spaceSize = Self.little(m, 6, 2) else { return }
        let version = m[0]
        func pad(_ n: Int) -> Int { version == 1 ? (n + 7) / 8 * 8 : n }
        var at = version == 3 ? 9 : 8
        guard version >= 1, version <= 3 else { return }
        at += pad(nameSize)
        let typeAt = at
        at += pad(typeSize)
        let spaceAt = at
        at += pad(spaceSize)
        // libhdf5 1.10 takes the three sizes on trust and reads the value after them, past the
        // message when they are too large (a damaged size made it allocate gigabytes).
        guard at <= m.count else {
            throw Problem(offset: -1, message: "\(object): an attribute whose name, type and space (\(nameSize), \(typeSize), \(spaceSize) bytes) exceed its message of \(m.count) bytes")
        }
        guard typeSize >= 8 else { return }
        guard m[typeAt] & 0x0F == 9 else { return }   // class 9: variable-length (sequence or string)
        // Its base type follows (a whole datatype message): libhdf5 allocates length × base size per
        // element, so a damaged base size is as dangerous as a damaged length.
        guard typeSize >= 16, let baseSize = Self.little(m, typeAt + 12, 4), baseSize >= 1 else { return }
        let isString = m[typeAt + 1] & 0x0F == 1
        if isString && baseSize != 1 {
            throw Problem(offset: -1, message: "\(object): a string attribute with \(baseSize)-byte characters")
        }
        guard let count = elementCount(m, spaceAt, spaceSize), count <= (m.count - at) / 16 else { return }
        try verifyReferences(Array(m[at...]), count: count, object: object, elementBytes: baseSize)
    }

    /// Elements of a dataspace message (versions 1 and 2); nil if it does not parse.
    func elementCount(_ m: [UInt8], _ at: Int, _ size: Int) -> Int? {
        guard size >= 4, at + size <= m.count else { return nil }
        let version = m[at], rank = Int(m[at + 1])
        guard rank <= 32 else { return nil }
        if version == 2 && m[at + 3] == 2 { return 0 }   // null dataspace
        let dims = at + (version == 1 ? 8 : 4)
        var n = 1
        for d in 0..<rank {
            guard let v = Self.little(m, dims + 8 * d, 8) else { return nil }
            let (r, o) = n.multipliedReportingOverflow(by: v)
            guard !o else { return nil }
            n = r
        }
        return n
    }

    /// Each reference: length (4), collection address (8), object index (4).
    func verifyReferences(_ raw: [UInt8], count: Int, object: String, elementBytes: Int = 1) throws {
        for e in 0..<count {
            guard let length = Self.little(raw, 16 * e, 4), let collection = Self.little(raw, 16 * e + 4, 8),
                  let index = Self.little(raw, 16 * e + 12, 4) else { return }
            if length == 0 && collection == 0 { continue }   // an empty or null value refers to nothing
            guard let objects = collections[collection] else {
                throw Problem(offset: collection, message: "\(object) refers to it for a variable-length value, but no valid collection is there")
            }
            guard let size = objects[index] else {
                throw Problem(offset: collection, message: "\(object) refers to object \(index), which it does not hold")
            }
            guard length <= size / elementBytes else {
                throw Problem(offset: collection, message: "\(object) reads \(length) elements of \(elementBytes) bytes from object \(index) of \(size) bytes")
            }
        }
    }
}
