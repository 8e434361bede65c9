import CZlib
import Foundation
import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

/// Each test gets a fresh directory, removed in tearDown.
class DataTestCase: ScratchDirectoryTestCase {

    @discardableResult
    func write(_ name: String, text: String) throws -> String { try write(name, Array(text.utf8)) }

    /// Requires `body` to throw a LocusError whose one-line description contains every string of
    /// `mentioning`; returns it.
    @discardableResult
    func expectError(_ mentioning: String..., sourceFile: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Void) -> LocusError? {
        LocusTestSupport.expectError(LocusError.self, mentioning: mentioning, file: sourceFile, line: line, body)
    }
}

/// gzip-compresses `bytes` with zlib (an independent writer for the reader under test).
func gzip(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
    var s = z_stream()
    precondition(deflateInit2_(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK)
    defer { deflateEnd(&s) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&s, uLong(bytes.count))) + 64)
    var input = bytes
    let produced: Int = input.withUnsafeMutableBufferPointer { i in
        out.withUnsafeMutableBufferPointer { o in
            s.next_in = i.baseAddress ?? UnsafeMutablePointer(bitPattern: 1)
            s.avail_in = UInt32(i.count)
            s.next_out = o.baseAddress
            s.avail_out = UInt32(o.count)
            precondition(deflate(&s, Z_FINISH) == Z_STREAM_END)
            return o.count - Int(s.avail_out)
        }
    }
    return Array(out[0..<produced])
}

/// An IDX file: magic 00 00 type ndim, big-endian int32 dims, payload (already big-endian).
func idxFile(type: UInt8, dims: [Int32], payload: [UInt8]) -> [UInt8] {
    var b: [UInt8] = [0, 0, type, UInt8(dims.count)]
    for d in dims { b += withUnsafeBytes(of: UInt32(bitPattern: d).bigEndian, Array.init) }
    return b + payload
}

func bigEndian<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bigEndian, Array.init) } }

/// Deterministic small values for tests.
struct TestRNG {
    var g: SplitMix64
    init(_ seed: UInt64) { g = SplitMix64(seed: seed) }
    mutating func bytes(_ n: Int) -> [UInt8] { g.bytes(n) }
    mutating func unit() -> Double { Double(g.next() >> 11) * 0x1p-53 }
    mutating func int(_ bound: Int) -> Int { Int(g.below(UInt64(bound))) }
}

extension LabelledData {
    var bytes: [UInt8] { if case .uint8(let a) = inputs { return a }; XCTFail("inputs are not uint8"); return [] }
    var floats: [Float] { if case .float32(let a) = inputs { return a }; XCTFail("inputs are not float32"); return [] }
}

/// A small uint8 image dataset [n, c, h, w] with labels i % classes.
func imageData(n: Int, c: Int = 1, h: Int, w: Int, classes: Int, seed: UInt64 = 1) -> LabelledData {
    var r = TestRNG(seed)
    let px = r.bytes(n * c * h * w)
    return LabelledData(inputs: .uint8(px), shape: [n, c, h, w], labels: (0..<n).map { Int64($0 % classes) },
                        classes: (0..<classes).map { "class\($0)" }, splits: [:])
}
