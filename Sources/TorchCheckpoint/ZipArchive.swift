import CZlib
import OneLineText

/// One member as its central-directory record describes it (ZIP64 extras already applied).
struct ZipMember: Sendable {
    let name: String
    let flags: UInt16
    let method: UInt16
    let crc32: UInt32
    let compressedSize: Int
    let uncompressedSize: Int
    let localHeaderOffset: Int
}

/// The central directory of a zip file (APPNOTE.TXT 6.3), read and checked against the file:
/// one disk only, every member's header and data inside the file and before the central directory,
/// no duplicate names, no encryption. Member data is located through its local header, which must
/// repeat the central record's name and method.
struct ZipArchive {
    static let maxCentralDirectoryBytes = 512 << 20
    static let maxMembers = 4_000_000

    let file: CheckpointFile
    let members: [ZipMember]
    let memberIndex: [String: Int]
    let centralDirectoryOffset: Int

    static let localSignature: UInt32 = 0x0403_4B50
    private static let centralSignature: UInt32 = 0x0201_4B50
    private static let endSignature: UInt32 = 0x0605_4B50
    private static let zip64LocatorSignature: UInt32 = 0x0706_4B50
    private static let zip64EndSignature: UInt32 = 0x0606_4B50

    init(file: CheckpointFile) throws(TorchCheckpointError) {
        self.file = file
        let path = file.path
        func fail(_ message: String) -> TorchCheckpointError { .archive(path: path, member: nil, message: message) }

        // End of central directory: 22 bytes plus a comment of up to 65535 bytes at the very end.
        guard file.byteCount >= 22 else {
            throw fail("the file is \(file.byteCount) bytes, too short for a zip end-of-central-directory record (22 bytes)")
        }
        let tailCount = min(file.byteCount, 22 + 0xFFFF)
        let tailStart = file.byteCount - tailCount
        let tail = try file.readBytes(count: tailCount, at: tailStart) { "zip end of central directory" }
        var endPosition: Int?
        var candidate = tailCount - 22
        while candidate >= 0 {
            if tail.u32(candidate) == Self.endSignature && candidate + 22 + Int(tail.u16(candidate + 20)) == tailCount {
                endPosition = candidate
                break
            }
            candidate -= 1
        }
        guard let end = endPosition else {
            throw fail("no end-of-central-directory record at the end of the file (truncated or not a zip file)")
        }
        let endOffset = tailStart + end
        var diskNumber = UInt32(tail.u16(end + 4))
        var centralDisk = UInt32(tail.u16(end + 6))
        var entriesOnDisk = UInt64(tail.u16(end + 8))
        var entryCount = UInt64(tail.u16(end + 10))
        var centralSize = UInt64(tail.u32(end + 12))
        var centralOffset = UInt64(tail.u32(end + 16))
        var recordsEnd = endOffset  // where the central directory (and any ZIP64 records) must end

        // ZIP64: a 20-byte locator right before the end record points at the ZIP64 end record.
        if endOffset >= 20 {
            let locator = try file.readBytes(count: 20, at: endOffset - 20) { "zip64 end-of-central-directory locator" }
            if locator.u32(0) == Self.zip64LocatorSignature {
                let recordOffset64 = locator.u64(8)
                guard locator.u32(4) == 0, locator.u32(16) <= 1 else {
                    throw fail("multi-disk zip archives are not supported (zip64 locator names disk \(locator.u32(4)) of \(locator.u32(16)))")
                }
                guard recordOffset64 <= UInt64(endOffset - 20), Int(recordOffset64) + 56 <= endOffset - 20 else {
                    throw fail("zip64 end-of-central-directory record offset \(recordOffset64) is not before its locator at \(endOffset - 20)")
                }
                let recordOffset = Int(recordOffset64)
                let record = try file.readBytes(count: 56, at: recordOffset) { "zip64 end-of-central-directory record" }
                guard record.u32(0) == Self.zip64EndSignature else {
                    throw fail("no zip64 end-of-central-directory record at offset \(recordOffset), where the locator points")
                }
                diskNumber = record.u32(16)
                centralDisk = record.u32(20)
                entriesOnDisk = record.u64(24)
                entryCount = record.u64(32)
                centralSize = record.u64(40)
                centralOffset = record.u64(48)
                recordsEnd = recordOffset
            } else if entryCount == 0xFFFF || centralSize == 0xFFFF_FFFF || centralOffset == 0xFFFF_FFFF {
                throw fail("the end-of-central-directory record defers to zip64 records, but there is no zip64 locator before it")
            }
        }
        guard diskNumber == 0, centralDisk == 0, entriesOnDisk == entryCount else {
            throw fail("multi-disk zip archives are not supported (disk \(diskNumber), central directory on disk \(centralDisk))")
        }
        guard centralOffset <= UInt64(recordsEnd), centralSize <= UInt64(recordsEnd) - centralOffset else {
            throw fail("central directory offset \(centralOffset) + size \(centralSize) exceeds the \(recordsEnd) bytes before the end records")
        }
        guard centralSize <= UInt64(Self.maxCentralDirectoryBytes) else {
            throw fail("central directory of \(centralSize) bytes exceeds the limit of \(Self.maxCentralDirectoryBytes) bytes")
        }
        // Each central record takes at least 46 bytes, which bounds the count before any allocation.
        guard entryCount <= centralSize / 46, entryCount <= UInt64(Self.maxMembers) else {
            throw fail("\(entryCount) members cannot fit in a central directory of \(centralSize) bytes")
        }
        let directoryOffset = Int(centralOffset)
        let directory = try file.readBytes(count: Int(centralSize), at: directoryOffset) { "zip central directory" }
        self.centralDirectoryOffset = directoryOffset

        var members: [ZipMember] = []
        members.reserveCapacity(Int(entryCount))
        var index: [String: Int] = [:]
        var position = 0
        for ordinal in 0..<Int(entryCount) {
            guard position + 46 <= directory.count, directory.u32(position) == Self.centralSignature else {
                throw fail("central directory record \(ordinal) at offset \(directoryOffset + position) is missing or has a bad signature")
            }
            let flags = directory.u16(position + 8)
            let method = directory.u16(position + 10)
            let crc = directory.u32(position + 16)
            var compressed = UInt64(directory.u32(position + 20))
            var uncompressed = UInt64(directory.u32(position + 24))
            let nameLength = Int(directory.u16(position + 28))
            let extraLength = Int(directory.u16(position + 30))
            let commentLength = Int(directory.u16(position + 32))
            var diskStart = UInt32(directory.u16(position + 34))
            var localOffset = UInt64(directory.u32(position + 42))
            let nameStart = position + 46
            let recordEnd = nameStart + nameLength + extraLength + commentLength
            guard recordEnd <= directory.count else {
                throw fail("central directory record \(ordinal) runs past the end of the central directory")
            }
            guard let name = String(validating: directory[nameStart..<nameStart + nameLength], as: UTF8.self) else {
                throw fail("central directory record \(ordinal) has a name that is not UTF-8")
            }
            func memberFail(_ message: String) -> TorchCheckpointError { .archive(path: path, member: name, message: message) }

            // ZIP64 extended information (header 0x0001): 8-byte values for exactly the fields
            // whose 32-bit slot holds the 0xFFFFFFFF sentinel, in this order.
            var extra = nameStart + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = directory.u16(extra)
                let size = Int(directory.u16(extra + 2))
                let body = extra + 4
                guard body + size <= extraEnd else { throw memberFail("extra field 0x\(String(id, radix: 16)) runs past its record") }
                if id == 0x0001 {
                    var field = body
                    func next64(_ what: String) throws(TorchCheckpointError) -> UInt64 {
                        guard field + 8 <= body + size else { throw memberFail("zip64 extra field lacks the 8-byte \(what)") }
                        defer { field += 8 }
                        return directory.u64(field)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next64("uncompressed size") }
                    if compressed == 0xFFFF_FFFF { compressed = try next64("compressed size") }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next64("local header offset") }
                    if diskStart == 0xFFFF {
                        guard field + 4 <= body + size else { throw memberFail("zip64 extra field lacks the disk number") }
                        diskStart = directory.u32(field)
                    }
                }
                extra = body + size
            }
            guard diskStart == 0 else { throw memberFail("starts on disk \(diskStart); multi-disk archives are not supported") }
            guard flags & 0x0001 == 0 else { throw memberFail("is encrypted") }
            guard localOffset <= UInt64(directoryOffset), compressed <= UInt64(directoryOffset),
                uncompressed <= UInt64(Int.max)
            else {
                throw memberFail("local header offset \(localOffset) or size \(compressed) lies beyond the central directory at \(directoryOffset)")
            }
            guard index[name] == nil else { throw memberFail("appears twice in the central directory") }
            index[name] = members.count
            members.append(
                ZipMember(
                    name: name, flags: flags, method: method, crc32: crc, compressedSize: Int(compressed),
                    uncompressedSize: Int(uncompressed), localHeaderOffset: Int(localOffset)))
            position = recordEnd
        }
        self.members = members
        self.memberIndex = index
    }

    func member(named name: String) -> ZipMember? { memberIndex[name].map { members[$0] } }

    /// Absolute offset of the member's data, after checking its local header against the central
    /// record and that the data lies before the central directory.
    func dataOffset(of member: ZipMember) throws(TorchCheckpointError) -> Int {
        let path = file.path
        func fail(_ message: String) -> TorchCheckpointError { .archive(path: path, member: member.name, message: message) }
        guard member.localHeaderOffset + 30 <= centralDirectoryOffset else {
            throw fail("local header at offset \(member.localHeaderOffset) overlaps the central directory at \(centralDirectoryOffset)")
        }
        let header = try file.readBytes(count: 30, at: member.localHeaderOffset) { "local header of \(quoted(member.name))" }
        guard header.u32(0) == Self.localSignature else {
            throw fail("no local header signature at offset \(member.localHeaderOffset)")
        }
        let nameLength = Int(header.u16(26))
        let extraLength = Int(header.u16(28))
        let nameOffset = member.localHeaderOffset + 30
        guard nameOffset + nameLength + extraLength <= centralDirectoryOffset else {
            throw fail("local header at offset \(member.localHeaderOffset) runs into the central directory")
        }
        let localName = try file.readBytes(count: nameLength, at: nameOffset) { "local header name of \(quoted(member.name))" }
        guard localName == Array(member.name.utf8) else {
            throw fail("local header at offset \(member.localHeaderOffset) names a different member")
        }
        guard header.u16(8) == member.method else {
            throw fail("local header says compression method \(header.u16(8)), the central directory \(member.method)")
        }
        // Sizes in the local header are only meaningful without a data descriptor (flag bit 3)
        // and when not deferred to a ZIP64 extra field.
        let localCompressed = header.u32(18)
        if member.flags & 0x0008 == 0, localCompressed != 0xFFFF_FFFF, Int(localCompressed) != member.compressedSize {
            throw fail("local header says \(localCompressed) compressed bytes, the central directory \(member.compressedSize)")
        }
        let dataOffset = nameOffset + nameLength + extraLength
        guard member.compressedSize <= centralDirectoryOffset - dataOffset else {
            throw fail("data [\(dataOffset), +\(member.compressedSize)) runs into the central directory at \(centralDirectoryOffset)")
        }
        return dataOffset
    }

    /// The whole (uncompressed) content of a small member: stored or deflated, CRC-checked.
    func contents(of member: ZipMember, limit: Int) throws(TorchCheckpointError) -> [UInt8] {
        let path = file.path
        func fail(_ message: String) -> TorchCheckpointError { .archive(path: path, member: member.name, message: message) }
        guard member.uncompressedSize <= limit, member.compressedSize <= limit else {
            throw fail("is \(member.uncompressedSize) bytes, more than the limit of \(limit) bytes for this member")
        }
        let offset = try dataOffset(of: member)
        let raw = try file.readBytes(count: member.compressedSize, at: offset) { "data of \(quoted(member.name))" }
        let bytes: [UInt8]
        switch member.method {
        case 0:
            guard member.compressedSize == member.uncompressedSize else {
                throw fail("is stored (not compressed) but its sizes differ: \(member.compressedSize) vs \(member.uncompressedSize)")
            }
            bytes = raw
        case 8:
            bytes = try inflateRaw(raw, expectedCount: member.uncompressedSize, fail: fail)
        default:
            throw fail("uses compression method \(member.method); only stored (0) and deflate (8) are read")
        }
        let checksum = bytes.withUnsafeBufferPointer { buffer -> UInt32 in
            var crc: uLong = 0
            var position = 0
            while position < buffer.count {
                let chunk = min(buffer.count - position, 1 << 30)
                crc = CZlib.crc32(crc, buffer.baseAddress.map { $0 + position }, uInt(chunk))
                position += chunk
            }
            return UInt32(truncatingIfNeeded: crc)
        }
        guard checksum == member.crc32 else {
            throw fail("CRC-32 is 0x\(String(checksum, radix: 16)) but the central directory records 0x\(String(member.crc32, radix: 16))")
        }
        return bytes
    }

    private func inflateRaw(
        _ input: [UInt8], expectedCount: Int, fail: (String) -> TorchCheckpointError
    ) throws(TorchCheckpointError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: expectedCount)
        var stream = z_stream()
        // Negative window bits: raw deflate, as zip stores it (no zlib or gzip wrapper).
        guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw fail("zlib could not be initialised to inflate it")
        }
        defer { inflateEnd(&stream) }
        var mutableInput = input
        let status: Int32 = mutableInput.withUnsafeMutableBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer in
                stream.next_in = inBuffer.baseAddress
                stream.avail_in = uInt(inBuffer.count)
                stream.next_out = outBuffer.baseAddress
                stream.avail_out = uInt(outBuffer.count)
                // One byte of spare room would be needed to see Z_STREAM_END with an exact buffer;
                // instead check that all input was consumed and all output produced.
                return inflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END || (status == Z_BUF_ERROR && stream.avail_out == 0 && stream.avail_in == 0),
            Int(stream.total_out) == expectedCount
        else {
            throw fail("deflated data is corrupt or does not inflate to the recorded \(expectedCount) bytes (zlib status \(status), \(stream.total_out) bytes)")
        }
        return output
    }
}
