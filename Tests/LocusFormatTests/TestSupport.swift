import CHDF5
import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

/// Each test gets a fresh directory, removed in tearDown.
class LocusTestCase: ScratchDirectoryTestCase {

    func copy(_ from: String, _ to: String) throws -> String {
        let dst = path(to)
        try FileManager.default.copyItem(atPath: from, toPath: dst)
        return dst
    }

    /// Requires `body` to throw a LocusError (one line, naming `file` when given) and returns it.
    @discardableResult
    func expectLocusError(mentioning file: String? = nil, _ body: () throws -> Void,
                          sourceFile: StaticString = #filePath, line: UInt = #line) -> LocusError? {
        let e = LocusTestSupport.expectError(LocusError.self, mentioning: file.map { [$0] } ?? [], file: sourceFile, line: line, body)
        if let e { XCTAssertFalse(e.message.isEmpty, file: sourceFile, line: line) }
        return e
    }

    /// Validation must find nothing at all (no errors, no warnings) in what Locus writes.
    func assertClean(_ p: String, allowWarnings: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        let findings = Validator.validate(p)
        let relevant = allowWarnings ? findings.filter { $0.severity == .error } : findings
        XCTAssertEqual(relevant, [], "findings: \(findings.map(\.description))", file: file, line: line)
    }

    /// Validation must report an error whose object is `object` (or, with `prefix`, starts with it).
    @discardableResult
    func assertFinding(_ p: String, object: String, prefix: Bool = false, contains fragment: String? = nil,
                       file: StaticString = #filePath, line: UInt = #line) -> [Finding] {
        let findings = Validator.validate(p)
        let errors = findings.filter { $0.severity == .error }
        let hit = errors.contains { f in
            (prefix ? f.object.hasPrefix(object) : f.object == object) && (fragment.map { f.message.contains($0) } ?? true)
        }
        XCTAssertTrue(hit, "no error at \(object)\(fragment.map { " mentioning '\($0)'" } ?? ""); findings: \(findings.map(\.description))",
                      file: file, line: line)
        for f in findings {
            XCTAssertEqual(f.file, p, file: file, line: line)
            XCTAssertFalse(f.description.contains("\n"), file: file, line: line)
        }
        return findings
    }
}

/// Opens a finished file read-write, lets `body` change it through the HDF5 wrapper, closes it.
func modifyHDF5(_ path: String, _ body: (Group) throws -> Void) throws {
    let f = try File.open(path, mode: .readWrite)
    try body(try f.root)
    try f.close()
}

/// Removes the link `name` from `group` (the wrapper has no delete; tests use the C API).
func deleteLink(_ group: Group, _ name: String) {
    precondition(H5Ldelete(group.id, name, locus_H5P_DEFAULT()) >= 0, "H5Ldelete \(name)")
}

extension Dataset {
    func writeValues<T>(_ values: [T], memType: Datatype) throws {
        try values.withUnsafeBytes { try write($0, memType: memType) }
    }
    func writeValues<T>(_ values: [T], memType: Datatype, start: Int) throws {
        try values.withUnsafeBytes { try write($0, memType: memType, start: [start], count: [values.count]) }
    }
    func readUInt64() throws -> [UInt64] {
        var out = [UInt64](repeating: 0, count: elementCount)
        try out.withUnsafeMutableBytes { try read(into: $0, memType: .nativeUInt64) }
        return out
    }
}

// MARK: - Independent SHA-256 and fingerprint (spec §1.5), for checking the library's

enum SHA256Reference {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    static func hex(_ message: [UInt8]) -> String { digest(message).map { String(format: "%02x", $0) }.joined() }

    static func digest(_ message: [UInt8]) -> [UInt8] { message.withUnsafeBytes { digest($0) } }

    static func digest(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        // Whole blocks come straight from the message; the padded tail is built separately.
        let wholeBlocks = message.count / 64
        var tail = Array(message[(wholeBlocks * 64)...])
        let bitLength = UInt64(message.count) * 8
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for i in (0..<8).reversed() { tail.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        var w = [UInt32](repeating: 0, count: 64)
        k.withUnsafeBufferPointer { k in
            w.withUnsafeMutableBufferPointer { w in
                func compress(_ block: UnsafeRawBufferPointer) {
                    for t in 0..<16 {
                        w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16 | UInt32(block[4 * t + 2]) << 8 | UInt32(block[4 * t + 3])
                    }
                    for t in 16..<64 {
                        let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
                        let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
                        w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
                    }
                    var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
                    for t in 0..<64 {
                        let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                        let ch = (e & f) ^ (~e & g)
                        let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
                        let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                        let maj = (a & b) ^ (a & c) ^ (b & c)
                        let t2 = s0 &+ maj
                        (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
                    }
                    h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
                }
                for i in 0..<wholeBlocks { compress(UnsafeRawBufferPointer(rebasing: message[(i * 64)..<(i * 64 + 64)])) }
                tail.withUnsafeBytes { t in
                    for i in stride(from: 0, to: t.count, by: 64) { compress(UnsafeRawBufferPointer(rebasing: t[i..<(i + 64)])) }
                }
            }
        }
        return h.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32($0))) } }
    }
}

/// A tensor as raw little-endian bytes, the way tests describe what they write.
struct RawTensor {
    var name: String
    var dtype: LocusDType
    var shape: [Int]
    var bytes: [UInt8]
    var count: Int { shape.reduce(1, *) }
}

/// The tensor digest of spec §1.5: SHA-256 of the SHA-256 digests of 1 MiB leaves (none for no bytes).
func referenceTensorDigest(_ bytes: [UInt8]) -> [UInt8] {
    let leaf = 1 << 20
    var digests: [UInt8] = []
    bytes.withUnsafeBytes { b in
        for start in stride(from: 0, to: b.count, by: leaf) {
            digests += SHA256Reference.digest(UnsafeRawBufferPointer(rebasing: b[start..<min(b.count, start + leaf)]))
        }
    }
    return SHA256Reference.digest(digests)
}

/// The fingerprint of spec §1.5, computed from scratch.
func referenceFingerprint(_ tensors: [RawTensor]) -> String {
    var stream = Array("locus-fingerprint-v1\n".utf8)
    for t in tensors.sorted(by: { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }) {
        stream += Array("\(t.name)\n\(t.dtype.rawValue)\n\(t.shape.map(String.init).joined(separator: ","))\n".utf8)
        stream += referenceTensorDigest(t.bytes)
    }
    return "sha256:" + SHA256Reference.hex(stream)
}

/// Random raw contents valid for `dtype` (bool: 0/1 bytes).
func randomTensor(_ name: String, _ dtype: LocusDType, _ shape: [Int], _ rng: inout SplitMix64) -> RawTensor {
    let n = shape.reduce(1, *)
    var bytes = rng.bytes(n * dtype.byteSize)
    if dtype == .bool { bytes = bytes.map { $0 & 1 } }
    return RawTensor(name: name, dtype: dtype, shape: shape, bytes: bytes)
}

/// Writes `tensors` (in the given order) as a checkpoint; returns the fingerprint finish() reports.
@discardableResult
func writeCheckpoint(_ path: String, _ tensors: [RawTensor], metadata: [String: String]? = nil, architecture: String? = nil) throws -> String {
    let w = try CheckpointWriter(path: path, metadata: metadata, architecture: architecture)
    for t in tensors { try t.bytes.withUnsafeBytes { try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) } }
    return try w.finish()
}

func floatBytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

/// numpy.quantile(v.astype(float64), [0, .25, .5, .75, 1]) (linear interpolation), from a sort.
func referenceQuantiles(_ values: [Float]) -> [Double] {
    guard !values.isEmpty else { return [] }
    let s = values.map(Double.init).sorted()
    return [0.0, 0.25, 0.5, 0.75, 1.0].map { q in
        let pos = q * Double(s.count - 1)
        let lo = Int(pos.rounded(.down)), hi = Int(pos.rounded(.up))
        return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
    }
}

func assertClose(_ a: [Double], _ b: [Double], relative: Double = 1e-9, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(a) vs \(b)", file: file, line: line)
    for (x, y) in zip(a, b) {
        XCTAssertLessThanOrEqual(abs(x - y), relative * max(abs(x), abs(y)) + 1e-300, "\(a) vs \(b)", file: file, line: line)
    }
}

func writeFixedStringC(_ obj: hid_t, _ name: String, _ value: String) throws {
    let bytes = Array(value.utf8)
    let t = H5Tcopy(locus_H5T_C_S1())
    defer { H5Tclose(t) }
    H5Tset_size(t, bytes.count + 2)
    H5Tset_strpad(t, H5T_STR_NULLPAD)
    let space = H5Screate(H5S_SCALAR)
    defer { H5Sclose(space) }
    let a = H5Acreate2(obj, name, t, space, locus_H5P_DEFAULT(), locus_H5P_DEFAULT())
    guard a >= 0 else { throw LocusError(file: "?", "H5Acreate2 \(name) failed") }
    defer { H5Aclose(a) }
    var buf = bytes + [0, 0]
    guard H5Awrite(a, t, &buf) >= 0 else { throw LocusError(file: "?", "H5Awrite \(name) failed") }
}
