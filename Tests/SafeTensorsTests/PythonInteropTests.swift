import Foundation
import LocusTestSupport
import XCTest

@testable import SafeTensors

/// Cross-checks against the reference implementation through its Python bindings
/// (`pip install safetensors numpy`). Skipped, with a message, when they are not installed.
final class PythonInteropTests: XCTestCase {
    private static let dtypeToNumpy: [SafeTensorsDType: String] = [
        .F64: "float64", .F32: "float32", .F16: "float16",
        .I64: "int64", .I32: "int32", .I16: "int16", .I8: "int8",
        .U64: "uint64", .U32: "uint32", .U16: "uint16", .U8: "uint8", .BOOL: "bool",
    ]

    private struct PythonResult {
        var status: Int32
        var output: String
    }

    private func runPython(_ script: String, _ arguments: [String]) throws -> PythonResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("py-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile) }
        // A file, not a pipe, so a chatty child can never block on a full pipe buffer.
        let handle = try FileHandle(forWritingTo: outputFile)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try handle.close()
        let output = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        return PythonResult(status: process.terminationStatus, output: output)
    }

    private func requirePythonPeers() throws {
        let result = try? runPython("import safetensors, numpy", [])
        if result?.status != 0 {
            throw XCTSkip(
                "Python peers unavailable (python3 with safetensors and numpy; `pip install safetensors numpy`): "
                    + (result?.output.trimmingCharacters(in: .whitespacesAndNewlines) ?? "python3 could not be run"))
        }
    }

    private func runPythonOrFail(_ script: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try runPython(script, arguments)
        XCTAssertEqual(result.status, 0, "python failed:\n\(result.output)", file: file, line: line)
        if result.status != 0 { throw XCTSkip("python script failed; see the failure above") }
    }

    /// Python (reference) writes, Swift reads.
    func testReadsFileWrittenByPython() throws {
        try requirePythonPeers()
        let directory = try makeTemporaryDirectory()
        let modelPath = directory + "/python.safetensors"
        let script = #"""
            import json, sys
            import numpy as np
            from safetensors.numpy import save_file
            out, dump = sys.argv[1], sys.argv[2]
            rng = np.random.default_rng(1234)
            tensors = {
                "f64": rng.standard_normal((2, 3)).astype(np.float64),
                "f32": rng.standard_normal((4, 5)).astype(np.float32),
                "f16": rng.standard_normal((3,)).astype(np.float16),
                "i64": rng.integers(-2**40, 2**40, (5,)).astype(np.int64),
                "i32": rng.integers(-2**20, 2**20, (2, 2)).astype(np.int32),
                "i16": rng.integers(-1000, 1000, (7,)).astype(np.int16),
                "i8": rng.integers(-128, 127, (9,)).astype(np.int8),
                "u64": rng.integers(0, 2**40, (3,)).astype(np.uint64),
                "u32": rng.integers(0, 2**30, (3,)).astype(np.uint32),
                "u16": rng.integers(0, 60000, (3,)).astype(np.uint16),
                "u8": rng.integers(0, 255, (2, 3, 4)).astype(np.uint8),
                "bool": rng.integers(0, 2, (3, 2)).astype(np.bool_),
                "scalar": np.array(3.5, dtype=np.float32),
                "empty": np.zeros((0, 4), dtype=np.float32),
                "layer.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
            }
            metadata = {"format": "np", "note": "h\u00e9llo \"quoted\"\nnext", "emoji": "\U0001F600"}
            save_file(tensors, out, metadata=metadata)
            manifest = {"metadata": metadata, "tensors": {}}
            for name, arr in tensors.items():
                manifest["tensors"][name] = {"dtype": str(arr.dtype), "shape": list(arr.shape),
                                             "hex": np.ascontiguousarray(arr).tobytes().hex()}
            with open(dump, "w") as f:
                json.dump(manifest, f)
            """#
        let manifestPath = directory + "/manifest.json"
        try runPythonOrFail(script, [modelPath, manifestPath])

        let manifest = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath))) as? [String: Any])
        let tensors = try XCTUnwrap(manifest["tensors"] as? [String: [String: Any]])
        let reader = try SafeTensorsReader(path: modelPath)
        XCTAssertEqual(reader.metadata, manifest["metadata"] as? [String: String])
        XCTAssertEqual(reader.entries.count, tensors.count)
        XCTAssertEqual(reader.dataSectionOffset % 8, 0)
        for (name, info) in tensors {
            let entry = try XCTUnwrap(reader.entry(named: name), name)
            XCTAssertEqual(Self.dtypeToNumpy[entry.dtype], info["dtype"] as? String, name)
            XCTAssertEqual(entry.shape, info["shape"] as? [Int], name)
            XCTAssertEqual(try reader.readBytes(entry), try XCTUnwrap(bytes(fromHex: info["hex"] as? String)), name)
        }
    }

    /// Swift writes, Python (reference) reads and validates.
    func testPythonReadsFileWrittenBySwift() throws {
        try requirePythonPeers()
        let directory = try makeTemporaryDirectory()
        let modelPath = directory + "/swift.safetensors"
        let manifestPath = directory + "/manifest.json"

        var specs: [SafeTensorsWriter.TensorSpec] = []
        var data: [String: [UInt8]] = [:]
        let shapes: [[Int]] = [[3, 4], [], [0, 2], [5]]
        for (dtypeIndex, dtype) in SafeTensorsDType.allCases.enumerated() where Self.dtypeToNumpy[dtype] != nil {
            for (shapeIndex, shape) in shapes.enumerated() {
                let name = "\(dtype.rawValue.lowercased()).\(shapeIndex)"
                specs.append(SafeTensorsWriter.TensorSpec(name: name, dtype: dtype, shape: shape))
                var bytes = randomBytes(shape.reduce(1, *) * dtype.byteSize, seed: UInt64(dtypeIndex * 10 + shapeIndex))
                if dtype == .BOOL { bytes = bytes.map { $0 & 1 } }  // numpy bools are 0 or 1.
                data[name] = bytes
            }
        }
        let metadata = ["format": "pt", "quote\"d": "line\nbreak", "unicode": "日本 😀"]
        var writer = try SafeTensorsWriter(path: modelPath, tensors: specs, metadata: metadata)
        for spec in specs {
            let bytes = data[spec.name] ?? []
            // Two chunks each, to exercise streaming.
            let half = bytes.count / 2
            try writer.write(Array(bytes[..<half]))
            try writer.write(Array(bytes[half...]))
        }
        try writer.finish()

        let script = #"""
            import json, sys
            from safetensors import safe_open
            from safetensors.numpy import load_file
            path, dump = sys.argv[1], sys.argv[2]
            tensors = load_file(path)
            with safe_open(path, framework="numpy") as f:
                metadata = f.metadata()
                keys = list(f.keys())
            manifest = {"metadata": metadata, "keys": keys, "tensors": {}}
            for name, arr in tensors.items():
                manifest["tensors"][name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "hex": arr.tobytes().hex()}
            with open(dump, "w") as f:
                json.dump(manifest, f)
            """#
        try runPythonOrFail(script, [modelPath, manifestPath])

        let manifest = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath))) as? [String: Any])
        XCTAssertEqual(manifest["metadata"] as? [String: String], metadata)
        XCTAssertEqual(Set(manifest["keys"] as? [String] ?? []), Set(specs.map(\.name)))
        let tensors = try XCTUnwrap(manifest["tensors"] as? [String: [String: Any]])
        XCTAssertEqual(tensors.count, specs.count)
        for spec in specs {
            let info = try XCTUnwrap(tensors[spec.name], spec.name)
            XCTAssertEqual(info["dtype"] as? String, Self.dtypeToNumpy[spec.dtype], spec.name)
            XCTAssertEqual(info["shape"] as? [Int], spec.shape, spec.name)
            XCTAssertEqual(bytes(fromHex: info["hex"] as? String), data[spec.name], spec.name)
        }
    }

    /// Both implementations reject a layout whose tensors overlap.
    func testPythonAndSwiftAgreeOnOverlapRejection() throws {
        try requirePythonPeers()
        let directory = try makeTemporaryDirectory()
        let path = directory + "/overlap.safetensors"
        let header = "{\"a\":\(entryJSON("F32", [2], 0, 8)),\"b\":\(entryJSON("F32", [2], 4, 12))}"
        try writeFile(fileImage(header: header, data: [UInt8](repeating: 0, count: 12)), to: path)
        let script = #"""
            import sys
            from safetensors import safe_open
            try:
                with safe_open(sys.argv[1], framework="numpy") as f:
                    pass
            except Exception as e:
                print("rejected:", e)
                sys.exit(0)
            sys.exit(3)
            """#
        let result = try runPython(script, [path])
        XCTAssertEqual(result.status, 0, "the reference accepted an overlapping layout: \(result.output)")
        XCTAssertNotNil(expectSafeTensorsError { _ = try SafeTensorsReader(path: path) })
    }

    private func bytes(fromHex hex: String?) -> [UInt8]? {
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
}
