import Foundation
import LocusRandom
import LocusTestSupport
import XCTest

@testable import TorchCheckpoint

/// Hand-made and damaged files: every one fails with a TorchCheckpointError (never a trap), in
/// bounded time. The hand-made archive is first shown to be read correctly, so the damage, not
/// the builder, is what each test exercises.
final class CorruptInputTests: XCTestCase {
    // MARK: Builders

    private static let crcTable: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    private static func crc32(_ bytes: [UInt8]) -> UInt32 {
        ~bytes.reduce(~UInt32(0)) { crcTable[Int(($0 ^ UInt32($1)) & 0xFF)] ^ ($0 >> 8) }
    }

    private static func le(_ value: Int, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// A stored zip archive (no ZIP64), the layout torch.save writes.
    static func zipImage(_ members: [(String, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for (name, data) in members {
            let offset = out.count
            let nameBytes = Array(name.utf8)
            let crc = Int(crc32(data))
            out += le(0x0403_4B50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4)
            out += le(data.count, 4) + le(data.count, 4) + le(nameBytes.count, 2) + le(0, 2) + nameBytes + data
            central += le(0x0201_4B50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4)
            central += le(data.count, 4) + le(data.count, 4) + le(nameBytes.count, 2) + le(0, 2) + le(0, 2)
            central += le(0, 2) + le(0, 2) + le(0, 4) + le(offset, 4) + nameBytes
        }
        let centralOffset = out.count
        out += central
        out += le(0x0605_4B50, 4) + le(0, 4) + le(members.count, 2) + le(members.count, 2)
        out += le(central.count, 4) + le(centralOffset, 4) + le(0, 2)
        return out
    }

    private static func unicode(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        return [0x58] + le(bytes.count, 4) + bytes
    }

    private static func int(_ value: Int) -> [UInt8] { [0x4A] + le(value, 4) }

    private static func tuple(_ items: [[UInt8]]) -> [UInt8] { [0x28] + items.flatMap { $0 } + [0x74] }

    /// `{name: _rebuild_tensor_v2(storage '0' of `numel` floats, offset, shape, stride, False, OrderedDict())}`
    /// in protocol 2, the way torch.save writes it.
    static func statePickle(name: String = "w", numel: Int, offset: Int, shape: [Int], stride: [Int]) -> [UInt8] {
        var p: [UInt8] = [0x80, 0x02, 0x7D, 0x28] + unicode(name)
        p += Array("ctorch._utils\n_rebuild_tensor_v2\n".utf8)
        let persistentID = tuple([unicode("storage"), Array("ctorch\nFloatStorage\n".utf8), unicode("0"), unicode("cpu"), int(numel)])
        p += [0x28] + persistentID + [0x51] + int(offset) + tuple(shape.map(int)) + tuple(stride.map(int)) + [0x89]
        p += Array("ccollections\nOrderedDict\n".utf8) + [0x29, 0x52, 0x74, 0x52, 0x75, 0x2E]
        return p
    }

    static func checkpoint(pickle: [UInt8], storage: [UInt8], extra: [(String, [UInt8])] = []) -> [UInt8] {
        zipImage([("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8)), ("archive/data/0", storage)] + extra)
    }

    private let floats: [Float] = [1, 2, 3, 4, 5, 6]
    private var storageBytes: [UInt8] { floats.withUnsafeBytes { Array($0) } }

    private func write(_ bytes: [UInt8]) throws -> String {
        let path = try makeTemporaryDirectory() + "/case.pt"
        try writeFileBytes(bytes, to: path)
        return path
    }

    private func open(_ bytes: [UInt8]) -> TorchCheckpointError? {
        guard let path = try? write(bytes) else {
            XCTFail("cannot write the test file")
            return nil
        }
        return expectCheckpointError { _ = try TorchCheckpointReader(path: path) }
    }

    private func floatsRead(_ reader: TorchCheckpointReader, _ name: String = "w") throws -> [Float] {
        let entry = try XCTUnwrap(reader.entry(named: name))
        var values = [Float](repeating: .nan, count: entry.elementCount)
        try values.withUnsafeMutableBytes { try reader.read(entry, into: $0) }
        return values
    }

    // MARK: Tests

    func testHandMadeArchiveIsRead() throws {
        // A 2×2 view with stride (1, 3) at offset 1 of [1…6]: [[2, 5], [3, 6]].
        let path = try write(Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 1, shape: [2, 2], stride: [1, 3]), storage: storageBytes))
        let reader = try TorchCheckpointReader(path: path)
        XCTAssertEqual(reader.entries, [TorchTensorEntry(name: "w", dtype: .float32, shape: [2, 2], elementCount: 4, byteCount: 16)])
        XCTAssertEqual(try floatsRead(reader), [2, 5, 3, 6])
        XCTAssertTrue(TorchCheckpointReader.isTorchCheckpoint(path: path))
    }

    /// `_rebuild_tensor_v3` names the dtype itself and may view an untyped (byte) storage;
    /// `torch.Size` arguments and LONG1 integers are accepted where torch writes them.
    func testRebuildTensorV3OnUntypedStorage() throws {
        var p: [UInt8] = [0x80, 0x02, 0x7D, 0x28] + Self.unicode("h")
        p += Array("ctorch._utils\n_rebuild_tensor_v3\n".utf8)
        let persistentID = Self.tuple([Self.unicode("storage"), Array("ctorch\nUntypedStorage\n".utf8), Self.unicode("0"), Self.unicode("cpu"), Self.int(24)])
        let size = Array("ctorch\nSize\n".utf8) + Self.tuple([Self.tuple([Self.int(2)])]) + [0x52]
        p += [0x28] + persistentID + [0x51] + [0x8A, 0x01, 0x02] + size + Self.tuple([Self.int(2)]) + [0x89]
        p += Array("ccollections\nOrderedDict\n".utf8) + [0x29, 0x52] + Array("ctorch\nfloat32\n".utf8) + [0x74, 0x52, 0x75, 0x2E]
        let reader = try TorchCheckpointReader(path: try write(Self.checkpoint(pickle: p, storage: storageBytes)))
        XCTAssertEqual(reader.entries, [TorchTensorEntry(name: "h", dtype: .float32, shape: [2], elementCount: 2, byteCount: 8)])
        // Offset 2 and stride 2 in float32 elements of [1…6]: elements 2 and 4.
        XCTAssertEqual(try floatsRead(reader, "h"), [3, 5])
    }

    func testMisuseOfReadIsAnError() throws {
        let path = try write(Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 0, shape: [6], stride: [1]), storage: storageBytes))
        let reader = try TorchCheckpointReader(path: path)
        let entry = try XCTUnwrap(reader.entry(named: "w"))
        var small = [UInt8](repeating: 0, count: 8)
        assertDescription(expectCheckpointError { try small.withUnsafeMutableBytes { try reader.read(entry, into: $0) } }, contains: ["buffer is 8 bytes", "24"])
        assertDescription(expectCheckpointError { try small.withUnsafeMutableBytes { try reader.read(entry, fromByte: 20, into: $0) } }, contains: ["outside the tensor's 24 bytes"])
        assertDescription(expectCheckpointError { try small.withUnsafeMutableBytes { try reader.read(entry, fromByte: -1, into: $0) } }, contains: ["outside"])
        let foreign = TorchTensorEntry(name: "w", dtype: .float32, shape: [600], elementCount: 600, byteCount: 2400)
        var big = [UInt8](repeating: 0, count: 2400)
        assertDescription(expectCheckpointError { try big.withUnsafeMutableBytes { try reader.read(foreign, into: $0) } }, contains: ["does not belong"])
        assertDescription(expectCheckpointError { _ = try reader.readBytes(foreign) }, contains: ["does not belong"])
        XCTAssertEqual(try reader.readBytes(entry), storageBytes)
    }

    func testEveryTruncationFailsCleanly() throws {
        let image = Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 0, shape: [3, 2], stride: [2, 1]), storage: storageBytes)
        let directory = try makeTemporaryDirectory()
        let path = directory + "/cut.pt"
        for cut in 0..<image.count {
            try writeFileBytes(Array(image[..<cut]), to: path)
            XCTAssertNotNil(expectCheckpointError { _ = try TorchCheckpointReader(path: path) }, "cut at \(cut)")
            XCTAssertFalse(TorchCheckpointReader.isTorchCheckpoint(path: path), "cut at \(cut)")
        }
    }

    func testDamagedZipStructures() throws {
        let pickle = Self.statePickle(numel: 6, offset: 0, shape: [6], stride: [1])
        let image = Self.checkpoint(pickle: pickle, storage: storageBytes)
        let centralOffset = Int(image[image.count - 6]) | Int(image[image.count - 5]) << 8
        func patched(_ offset: Int, _ bytes: [UInt8]) -> [UInt8] {
            var copy = image
            copy.replaceSubrange(offset..<offset + bytes.count, with: bytes)
            return copy
        }
        func archiveError(_ bytes: [UInt8], _ fragments: [String], line: UInt = #line) {
            let error = open(bytes)
            guard case .archive = error else { return XCTFail("\(String(describing: error))", line: line) }
            assertDescription(error, contains: fragments, line: line)
        }
        archiveError(patched(centralOffset, [0, 0, 0, 0]), ["central directory record 0", "bad signature"])
        // data.pkl's local header offset (central record field at +42) far outside the file.
        archiveError(patched(centralOffset + 42, [0xF0, 0xFF, 0xFF, 0x7F]), ["'archive/data.pkl'", "beyond the central directory"])
        // ... or pointing at the storage's data instead of a local header.
        archiveError(patched(centralOffset + 42, [40, 0, 0, 0]), ["'archive/data.pkl'", "local header"])
        // Central directory offset (EOCD +16) and size (EOCD +12) beyond the file.
        archiveError(patched(image.count - 6, [0xFF, 0xFF, 0xFF, 0x00]), ["central directory offset"])
        archiveError(patched(image.count - 10, [0xFF, 0xFF, 0x00, 0x00]), ["central directory offset"])
        // More members claimed than the central directory can hold.
        archiveError(patched(image.count - 14, [0xFF, 0x7F, 0xFF, 0x7F]), ["members cannot fit"])
        // Compressed size (central +20) larger than the space before the central directory.
        archiveError(patched(centralOffset + 20, [0xFF, 0xFF, 0, 0]), ["'archive/data.pkl'"])
        // A flipped byte in data.pkl: the CRC catches it before the pickle is interpreted.
        archiveError(patched(30 + "archive/data.pkl".utf8.count + 5, [0x00]), ["CRC-32"])
        // Duplicate member names.
        archiveError(Self.zipImage([("archive/data.pkl", pickle), ("archive/data.pkl", pickle)]), ["appears twice"])
        // Big-endian checkpoints are refused, not misread.
        let bigEndian = Self.zipImage([("archive/data.pkl", pickle), ("archive/byteorder", Array("big".utf8)), ("archive/data/0", storageBytes)])
        assertDescription(open(bigEndian), contains: ["big-endian"])
        // A storage member missing.
        assertDescription(open(Self.zipImage([("archive/data.pkl", pickle)])), contains: ["tensor 'w'", "'archive/data/0' is missing"])
    }

    func testStorageTooShortForTheView() throws {
        // The view [3, 2] with stride (2, 1) at offset 1 reaches element 6 of a 6-element storage.
        let view = open(Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 1, shape: [3, 2], stride: [2, 1]), storage: storageBytes))
        guard case .tensor(_, "w", _) = view else { return XCTFail("\(String(describing: view))") }
        assertDescription(view, contains: ["too short for the view", "reach element 6", "holds 6 elements"])
        // The pickle declares more elements than the member holds.
        let declared = open(Self.checkpoint(pickle: Self.statePickle(numel: 7, offset: 0, shape: [6], stride: [1]), storage: storageBytes))
        assertDescription(declared, contains: ["tensor 'w'", "holds 24 bytes", "declares 7 elements"])
        // Sizes whose product overflows.
        let overflow = open(Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 0, shape: [1 << 30, 1 << 30, 1 << 30], stride: [0, 0, 0]), storage: storageBytes))
        assertDescription(overflow, contains: ["tensor 'w'", "more elements than can be counted"])
        // Empty tensors need no storage at all; 0-d tensors one element.
        let empty = try TorchCheckpointReader(path: try write(Self.checkpoint(pickle: Self.statePickle(numel: 0, offset: 0, shape: [0, 5], stride: [5, 1]), storage: [])))
        XCTAssertEqual(empty.entries.first?.byteCount, 0)
        let scalar = try TorchCheckpointReader(path: try write(Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 5, shape: [], stride: []), storage: storageBytes)))
        XCTAssertEqual(try floatsRead(scalar), [6])
    }

    func testHostilePicklesFailInBoundedTime() throws {
        let start = Date()
        let header: [UInt8] = [0x80, 0x02]
        let cases: [(String, [UInt8], String)] = [
            ("huge BINUNICODE", header + [0x58, 0xFF, 0xFF, 0xFF, 0xFF, 0x61], "exceeds"),
            ("huge BINUNICODE8", header + [0x8D] + Self.le(Int.max, 8), "exceeds"),
            ("huge FRAME", [0x80, 0x04, 0x95] + Self.le(1 << 60, 8), "exceeds"),
            ("huge LONG4", header + [0x8B, 0xFF, 0xFF, 0xFF, 0x7F], "exceeds"),
            ("memo miss", header + [0x6A, 0xFF, 0xFF, 0xFF, 0xFF, 0x2E], "never stored"),
            ("deep tuples", header + [0x29] + [UInt8](repeating: 0x85, count: 200_000) + [0x2E], "nest more than"),
            ("deep lists", header + [UInt8](repeating: 0x5D, count: 200_000) + [UInt8](repeating: 0x61, count: 199_999) + [0x2E], "nest more than"),
            ("many marks", header + [UInt8](repeating: 0x28, count: 1_100_000), "open MARKs"),
            ("self-containing dict", header + [0x7D, 0x71, 0x00] + Self.unicode("a") + [0x68, 0x00, 0x73, 0x2E], "inserts it into itself"),
            ("list inside its own child", header + [0x5D, 0x71, 0x00, 0x5D, 0x68, 0x00, 0x61, 0x61, 0x2E], "inserts it into itself"),
            ("no STOP", header + [0x7D], "without a STOP"),
            ("stack underflow", header + [0x73, 0x2E], "stack"),
            ("old protocol", [0x80, 0x01, 0x7D, 0x2E], "protocol 1"),
            ("unknown opcode", header + [0xFF], "0xff"),
            ("not a tensor root", header + [0x4E, 0x2E], "holds None"),
            ("leftover stack", header + [0x4E, 0x4E, 0x2E], "leaves 1 values"),
            ("storage class called", header + Array("ctorch\nFloatStorage\n".utf8) + [0x29, 0x52, 0x2E], "construct a torch object"),
            ("bad persistent id", header + Self.unicode("x") + [0x51, 0x2E], "persistent id"),
            ("invalid UTF-8", header + [0x58, 0x02, 0, 0, 0, 0xC3, 0x28, 0x2E], "UTF-8"),
            ("BUILD on a tuple", header + [0x29, 0x7D, 0x62, 0x2E], "BUILD on a tuple"),
            // Linear time on a big stack (a copy of the stack per pop would take hours here).
            ("a million POPs", header + [UInt8](repeating: 0x4E, count: 1_000_000) + [UInt8](repeating: 0x30, count: 999_999) + [0x2E], "holds None"),
            ("a million-item TUPLE", header + [0x28] + [UInt8](repeating: 0x88, count: 1_000_000) + [0x74, 0x2E], "holds a tuple"),
        ]
        for (label, pickle, fragment) in cases {
            let error = open(Self.checkpoint(pickle: pickle, storage: storageBytes))
            XCTAssertNotNil(error, label)
            if let error { XCTAssertTrue(error.description.contains(fragment), "\(label): \(error)") }
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, "hostile pickles took too long")
    }

    /// Random damage to a valid pickle (re-wrapped so the CRC matches): the reader either reads it
    /// or throws; reading any entry it accepts either succeeds or throws. Never a trap.
    func testRandomlyDamagedPicklesNeverTrap() throws {
        var generator = SplitMix64(seed: 42)
        let pickle = Self.statePickle(numel: 6, offset: 1, shape: [2, 2], stride: [1, 3])
        let directory = try makeTemporaryDirectory()
        let path = directory + "/fuzz.pt"
        var accepted = 0
        for _ in 0..<1500 {
            var damaged = pickle
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let position = Int.random(in: 0..<damaged.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: damaged[position] = UInt8.random(in: 0...255, using: &generator)
                case 1: damaged.remove(at: position)
                default: damaged.insert(UInt8.random(in: 0...255, using: &generator), at: position)
                }
            }
            try writeFileBytes(Self.checkpoint(pickle: damaged, storage: storageBytes), to: path)
            do {
                let reader = try TorchCheckpointReader(path: path)
                accepted += 1
                for entry in reader.entries where entry.byteCount <= 1 << 20 {
                    var buffer = [UInt8](repeating: 0, count: entry.byteCount)
                    try? buffer.withUnsafeMutableBytes { try reader.read(entry, into: $0) }
                }
            } catch is TorchCheckpointError {
                continue
            }
        }
        // Most damage is detected; some (say, a changed digit of a size) yields another valid file.
        XCTAssertLessThan(accepted, 1500)
    }

    /// Random damage anywhere in the archive (headers, central directory, end records, data).
    func testRandomlyDamagedArchivesNeverTrap() throws {
        var generator = SplitMix64(seed: 7)
        let image = Self.checkpoint(pickle: Self.statePickle(numel: 6, offset: 0, shape: [3, 2], stride: [1, 3]), storage: storageBytes)
        let directory = try makeTemporaryDirectory()
        let path = directory + "/fuzz.pt"
        var outcomes: [String: Int] = [:]
        for _ in 0..<1500 {
            var damaged = image
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let position = Int.random(in: 0..<damaged.count, using: &generator)
                damaged[position] = UInt8.random(in: 0...255, using: &generator)
            }
            try writeFileBytes(damaged, to: path)
            _ = TorchCheckpointReader.isTorchCheckpoint(path: path)
            do {
                let reader = try TorchCheckpointReader(path: path)
                for entry in reader.entries { _ = try? reader.readBytes(entry) }
                outcomes["read", default: 0] += 1
            } catch let error as TorchCheckpointError {
                outcomes[String(describing: error).contains("CRC-32") ? "crc" : "other error", default: 0] += 1
            }
        }
        XCTAssertGreaterThan(outcomes["other error", default: 0], 100, "\(outcomes)")
    }
}
