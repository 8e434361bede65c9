import Foundation
import LocusTestSupport
import XCTest

@testable import TorchCheckpoint

struct PythonResult {
    var status: Int32
    var output: String
}

/// Helpers shared by the Python scripts of these tests (prepended to each script).
let pythonPrelude = #"""
    import json, struct, sys, zipfile, zlib, io, os
    def dump_manifest(path, tensors):
        # Reference bytes from torch itself: the contiguous row-major layout of each tensor.
        import torch
        out = {}
        for name, t in tensors.items():
            c = t.detach().contiguous()
            raw = c.reshape(-1).view(torch.uint8).numpy().tobytes() if c.numel() else b""
            out[name] = {"dtype": str(c.dtype).replace("torch.", ""), "shape": list(c.shape), "hex": raw.hex()}
        with open(path, "w") as f:
            json.dump({"order": list(tensors.keys()), "tensors": out}, f)

    def rewrite_zip(src, dst, zip64=False, deflate=()):
        # Re-writes a zip member by member with every size and offset in ZIP64 records (sentinels
        # in the 32-bit fields, the values in 0x0001 extra fields, ZIP64 end records), and/or with
        # the named members deflated. Python's zipfile and torch.load must still read the result.
        members = []
        with zipfile.ZipFile(src) as z:
            for info in z.infolist():
                members.append((info.filename, z.read(info.filename)))
        out = bytearray()
        central = bytearray()
        for name, data in members:
            crc = zlib.crc32(data) & 0xFFFFFFFF
            method = 8 if name in deflate else 0
            if method == 8:
                c = zlib.compressobj(9, zlib.DEFLATED, -15)
                payload = c.compress(data) + c.flush()
            else:
                payload = data
            offset = len(out)
            encoded = name.encode()
            if zip64:
                local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
                out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(local_extra))
                out += encoded + local_extra + payload
                extra = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), offset)
                central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
                central += encoded + extra
            else:
                out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, method, 0, 0, crc, len(payload), len(data), len(encoded), 0)
                out += encoded + payload
                central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, method, 0, 0, crc, len(payload), len(data), len(encoded), 0, 0, 0, 0, 0, offset)
                central += encoded
        cd_offset = len(out)
        out += central
        if zip64:
            record = len(out)
            out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(members), len(members), len(central), cd_offset)
            out += struct.pack("<IIQI", 0x07064b50, 0, record, 1)
            out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        else:
            out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, len(members), len(members), len(central), cd_offset, 0)
        with open(dst, "wb") as f:
            f.write(out)

    def write_checkpoint(dst, pickle_bytes, storages=None, archive="archive"):
        # A torch-style archive around an arbitrary data.pkl (for hostile or hand-made pickles).
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
            z.writestr(archive + "/data.pkl", pickle_bytes)
            z.writestr(archive + "/byteorder", "little")
            for key, data in (storages or {}).items():
                z.writestr(archive + "/data/" + key, data)
            z.writestr(archive + "/version", "3\n")
    """#

func runPython(_ script: String, _ arguments: [String]) throws -> PythonResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", pythonPrelude + "\n" + script] + arguments
    let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("py-\(UUID().uuidString).txt")
    _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outputFile) }
    // A file, not a pipe, so a chatty child can never block on a full pipe buffer.
    let handle = try FileHandle(forWritingTo: outputFile)
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    var environment = ProcessInfo.processInfo.environment
    environment["OMP_NUM_THREADS"] = "1"
    process.environment = environment
    try process.run()
    process.waitUntilExit()
    try handle.close()
    let output = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
    return PythonResult(status: process.terminationStatus, output: output)
}

extension XCTestCase {
    /// Skips (with the reason) when python3 with torch is not installed; `make deps` installs it.
    func requireTorch() throws {
        let result = try? runPython("import torch, numpy", [])
        if result?.status != 0 {
            throw XCTSkip(
                "python3 with torch and numpy is needed (`make deps`): "
                    + (result?.output.trimmingCharacters(in: .whitespacesAndNewlines) ?? "python3 could not be run"))
        }
    }

    func runPythonOrFail(_ script: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try runPython(script, arguments)
        XCTAssertEqual(result.status, 0, "python failed:\n\(result.output)", file: file, line: line)
        if result.status != 0 { throw XCTSkip("python script failed; see the failure above") }
        return result.output
    }

    /// Runs `body`, requires a `TorchCheckpointError`, and returns it.
    func expectCheckpointError(
        _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line
    ) -> TorchCheckpointError? {
        do {
            try body()
            XCTFail("expected a TorchCheckpointError, but nothing was thrown", file: file, line: line)
            return nil
        } catch let error as TorchCheckpointError {
            XCTAssertFalse(error.description.contains("\n"), "description must be one line: \(error)", file: file, line: line)
            return error
        } catch {
            XCTFail("expected a TorchCheckpointError, got \(error)", file: file, line: line)
            return nil
        }
    }

    func assertDescription(
        _ error: TorchCheckpointError?, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let error else { return }
        for fragment in fragments {
            XCTAssertTrue(error.description.contains(fragment), "\"\(error)\" lacks \"\(fragment)\"", file: file, line: line)
        }
    }

    /// Reads every entry of `path` and compares dtype, shape and bytes with the manifest written by
    /// `dump_manifest`; also reads each tensor in uneven blocks to exercise `fromByte`.
    func assertMatchesManifest(
        _ reader: TorchCheckpointReader, manifestPath: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let manifest = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath))) as? [String: Any])
        let order = try XCTUnwrap(manifest["order"] as? [String])
        let tensors = try XCTUnwrap(manifest["tensors"] as? [String: [String: Any]])
        XCTAssertEqual(reader.entries.map(\.name), order, "entry order", file: file, line: line)
        for entry in reader.entries {
            let info = try XCTUnwrap(tensors[entry.name], entry.name, file: file, line: line)
            XCTAssertEqual(entry.dtype.rawValue, info["dtype"] as? String, entry.name, file: file, line: line)
            XCTAssertEqual(entry.shape, info["shape"] as? [Int], entry.name, file: file, line: line)
            let expected = try XCTUnwrap(bytes(fromHex: info["hex"] as? String), entry.name, file: file, line: line)
            XCTAssertEqual(entry.byteCount, expected.count, entry.name, file: file, line: line)
            var whole = [UInt8](repeating: 0xEE, count: entry.byteCount)
            try whole.withUnsafeMutableBytes { try reader.read(entry, into: $0) }
            XCTAssertEqual(whole, expected, "bytes of \(entry.name)", file: file, line: line)
            // Blocks of 7 bytes: unaligned to every element size.
            var blocks: [UInt8] = []
            var start = 0
            while start < entry.byteCount {
                let count = min(7, entry.byteCount - start)
                var block = [UInt8](repeating: 0, count: count)
                try block.withUnsafeMutableBytes { try reader.read(entry, fromByte: start, into: $0) }
                blocks += block
                start += count
            }
            XCTAssertEqual(blocks, expected, "block-wise bytes of \(entry.name)", file: file, line: line)
        }
    }
}

func bytes(fromHex hex: String?) -> [UInt8]? {
    guard let hex, hex.utf8.count % 2 == 0 else { return nil }
    var result: [UInt8] = []
    result.reserveCapacity(hex.utf8.count / 2)
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
        result.append(byte)
        index = next
    }
    return result
}

func readFileBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
func writeFileBytes(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }
