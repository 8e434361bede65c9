import Foundation
import LocusTestSupport
import XCTest

@testable import HDF5

final class DatatypeTests: HDF5TestCase {

    func testBFloat16Layout() throws {
        let t = try Datatype.bfloat16LE()
        XCTAssertEqual(t.typeClass, .float)
        XCTAssertEqual(t.size, 2)
        XCTAssertEqual(t.precision, 16)
        XCTAssertEqual(t.offset, 0)
        XCTAssertTrue(t.isLittleEndian)
        XCTAssertEqual(t.floatLayout, Datatype.FloatLayout(signPosition: 15, exponentPosition: 7, exponentSize: 8,
                                                           mantissaPosition: 0, mantissaSize: 7, bias: 127))
        let same = try Datatype.float16Like(exponentBits: 8, mantissaBits: 7, bias: 127)
        XCTAssertTrue(t.isEqual(to: same))
    }

    func testFloat16Layout() throws {
        let t = try Datatype.float16LE()
        XCTAssertEqual(t.typeClass, .float)
        XCTAssertEqual(t.size, 2)
        XCTAssertEqual(t.precision, 16)
        XCTAssertEqual(t.offset, 0)
        XCTAssertTrue(t.isLittleEndian)
        XCTAssertEqual(t.floatLayout, Datatype.FloatLayout(signPosition: 15, exponentPosition: 10, exponentSize: 5,
                                                           mantissaPosition: 0, mantissaSize: 10, bias: 15))
        XCTAssertFalse(t.isEqual(to: try Datatype.bfloat16LE()))
    }

    func testPredefinedLayouts() {
        XCTAssertEqual(Datatype.float32LE.floatLayout, Datatype.FloatLayout(signPosition: 31, exponentPosition: 23, exponentSize: 8,
                                                                            mantissaPosition: 0, mantissaSize: 23, bias: 127))
        XCTAssertEqual(Datatype.float64LE.floatLayout?.bias, 1023)
        XCTAssertNil(Datatype.int32LE.floatLayout)
        for (t, size, signed) in [(Datatype.int8LE, 1, true), (.int16LE, 2, true), (.int32LE, 4, true), (.int64LE, 8, true),
                                  (.uint8LE, 1, false), (.uint16LE, 2, false), (.uint32LE, 4, false), (.uint64LE, 8, false)] {
            XCTAssertEqual(t.typeClass, .integer)
            XCTAssertEqual(t.size, size)
            XCTAssertEqual(t.isSigned, signed)
            XCTAssertTrue(t.isLittleEndian)
        }
        XCTAssertEqual(try Datatype.variableUTF8String().typeClass, .string)
        XCTAssertTrue(try Datatype.variableUTF8String().isVariableString)
    }

    /// Every bfloat16 bit pattern, written with the file type as memory type and read back as
    /// float32 through HDF5's conversion, is the exact float (spec §1.4: reading is exact).
    func testAllBFloat16PatternsReadBackExactlyAsFloat() throws {
        let p = path("bf16.h5")
        let patterns = (0...0xFFFF).map { UInt16($0) }
        let bf16 = try Datatype.bfloat16LE()
        do {
            let f = try File.create(p)
            let ds = try f.root.createDataset("all", type: bf16, shape: [patterns.count])
            try patterns.withUnsafeBytes { try ds.write($0, memType: bf16) }
            try f.close()
        }
        let f = try File.open(p)
        let ds = try f.root.openDataset("all")
        // The stored bits are ours, untouched.
        let raw = try ds.readAll(UInt16.self, memType: try Datatype.bfloat16LE())
        XCTAssertEqual(raw, patterns)
        let floats = try ds.readFloats()
        var mismatches: [String] = []
        for (i, p) in patterns.enumerated() {
            let expected = Float(bitPattern: UInt32(p) << 16)
            let got = floats[i]
            if expected.isNaN {
                if !got.isNaN { mismatches.append(String(format: "%04x → %08x (not NaN)", p, got.bitPattern)) }
            } else if got.bitPattern != expected.bitPattern {
                mismatches.append(String(format: "%04x → %08x, expected %08x", p, got.bitPattern, expected.bitPattern))
            }
        }
        XCTAssertEqual(mismatches.count, 0, "first mismatches: \(mismatches.prefix(8))")
    }

    /// Same for IEEE binary16 (compared with Swift's exact Float16 → Float widening).
    func testAllFloat16PatternsReadBackExactlyAsFloat() throws {
        let p = path("f16.h5")
        let patterns = (0...0xFFFF).map { UInt16($0) }
        let f16 = try Datatype.float16LE()
        do {
            let f = try File.create(p)
            let ds = try f.root.createDataset("all", type: f16, shape: [patterns.count])
            try patterns.withUnsafeBytes { try ds.write($0, memType: f16) }
            try f.close()
        }
        let floats = try File.open(p).root.openDataset("all").readFloats()
        var mismatches = 0
        for (i, p) in patterns.enumerated() {
            let expected = Float(Float16(bitPattern: p))
            if expected.isNaN ? !floats[i].isNaN : floats[i].bitPattern != expected.bitPattern { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }
}
