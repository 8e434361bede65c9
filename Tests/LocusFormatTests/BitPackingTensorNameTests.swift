import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

final class BitPackingTests: XCTestCase {

    func testPackLayoutIsLittleBitOrder() {
        XCTAssertEqual(BitPacking.pack([true]), [0x01])
        XCTAssertEqual(BitPacking.pack([false, true]), [0x02])
        XCTAssertEqual(BitPacking.pack([true, false, false, false, false, false, false, true]), [0x81])
        XCTAssertEqual(BitPacking.pack([false, false, false, false, false, false, false, false, true]), [0x00, 0x01])
        XCTAssertEqual(BitPacking.pack([]), [])
        XCTAssertEqual(BitPacking.byteCount(bits: 0), 0)
        XCTAssertEqual(BitPacking.byteCount(bits: 1), 1)
        XCTAssertEqual(BitPacking.byteCount(bits: 8), 1)
        XCTAssertEqual(BitPacking.byteCount(bits: 9), 2)
    }

    func testRoundTripPopcountAndPadding() {
        var rng = SplitMix64(seed: 42)
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099] {
            let bits = (0..<count).map { _ in rng.next() & 1 == 1 }
            let packed = BitPacking.pack(bits)
            XCTAssertEqual(packed.count, (count + 7) / 8)
            XCTAssertEqual(BitPacking.unpack(packed, count: count), bits)
            XCTAssertEqual(BitPacking.popcount(packed), bits.filter { $0 }.count)
            XCTAssertTrue(BitPacking.paddingIsClear(packed, count: count))
            // Reference: element i is bit (i & 7) of byte (i >> 3).
            for i in 0..<count { XCTAssertEqual((packed[i >> 3] >> (i & 7)) & 1 == 1, bits[i]) }
            if count % 8 != 0 {
                var dirty = packed
                dirty[dirty.count - 1] |= 0x80
                XCTAssertFalse(BitPacking.paddingIsClear(dirty, count: count), "count \(count)")
            }
        }
        XCTAssertTrue(BitPacking.paddingIsClear([0xFF], count: 8))
        XCTAssertFalse(BitPacking.paddingIsClear([0x04], count: 2))
        XCTAssertTrue(BitPacking.paddingIsClear([0x03], count: 2))
    }
}

final class TensorNameTests: XCTestCase {

    func testEscapes() {
        XCTAssertEqual(TensorName.linkName(for: "layer.0.weight"), "layer.0.weight")
        XCTAssertEqual(TensorName.linkName(for: "a/b"), "a%2Fb")
        XCTAssertEqual(TensorName.linkName(for: "100%"), "100%25")
        XCTAssertEqual(TensorName.linkName(for: "/"), "%2F")
        XCTAssertEqual(TensorName.linkName(for: "%"), "%25")
        XCTAssertEqual(TensorName.linkName(for: "."), "%2E")
        XCTAssertEqual(TensorName.linkName(for: ".."), "..", "only a lone '.' is escaped")
        XCTAssertEqual(TensorName.linkName(for: "./"), ".%2F")
        XCTAssertEqual(TensorName.linkName(for: "%2F"), "%252F")
        XCTAssertEqual(TensorName.linkName(for: "%2E"), "%252E")
        XCTAssertEqual(TensorName.linkName(for: "é/ü%"), "é%2Fü%25")
    }

    func testUnquote() {
        XCTAssertEqual(TensorName.name(forLink: "a%2Fb"), "a/b")
        XCTAssertEqual(TensorName.name(forLink: "a%2fb"), "a/b", "hex digits in either case")
        XCTAssertEqual(TensorName.name(forLink: "%2E"), ".")
        XCTAssertEqual(TensorName.name(forLink: "%25"), "%")
        XCTAssertEqual(TensorName.name(forLink: "%41%42c"), "ABc", "unquote decodes any escape, like urllib")
        XCTAssertEqual(TensorName.name(forLink: "%C3%A9"), "é", "escaped UTF-8")
        XCTAssertEqual(TensorName.name(forLink: "plain"), "plain")
    }

    func testUnquoteLeavesMalformedEscapes() {
        for link in ["%", "%2", "a%", "a%2", "%zz", "%G1", "%1G", "%%", "%%41", "50%off", "%é1", "%-1"] {
            let expected = pythonUnquote(link)
            XCTAssertEqual(TensorName.name(forLink: link), expected, link)
        }
        XCTAssertEqual(TensorName.name(forLink: "%%41"), "%A")
        XCTAssertEqual(TensorName.name(forLink: "%2"), "%2")
        XCTAssertEqual(TensorName.name(forLink: "%zz"), "%zz")
    }

    func testRoundTripOfRandomNames() {
        var rng = SplitMix64(seed: 99)
        let alphabet: [String] = ["a", "Z", "0", "2", "5", "F", "E", "f", ".", "/", "%", "_", " ", "é", "✓", "\u{1F600}"]
        var seen = Set<String>()
        for _ in 0..<3000 {
            let n = 1 + Int(rng.next() % 6)
            let name = (0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }.joined()
            let link = TensorName.linkName(for: name)
            XCTAssertFalse(link.contains("/"), link)
            XCTAssertNotEqual(link, ".")
            XCTAssertEqual(TensorName.name(forLink: link), name, "\(name) → \(link)")
            XCTAssertEqual(pythonUnquote(link), name)
            seen.insert(link)
        }
        XCTAssertFalse(seen.isEmpty)
    }

    func testByteOrder() {
        XCTAssertTrue(TensorName.byteOrder("B", "a"))
        XCTAssertTrue(TensorName.byteOrder("z", "é"))
        XCTAssertTrue(TensorName.byteOrder("a", "a.b"))
        XCTAssertFalse(TensorName.byteOrder("a", "a"))
        // Canonically equivalent but different bytes: still strictly ordered by bytes.
        XCTAssertTrue(TensorName.byteOrder("cafe\u{301}", "caf\u{E9}"))
    }
}

/// urllib.parse.unquote for ASCII-or-UTF-8 input: %XX (hex) decodes, anything else stays.
func pythonUnquote(_ s: String) -> String {
    let u = Array(s.utf8)
    var out: [UInt8] = []
    var i = 0
    func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
    while i < u.count {
        if u[i] == 37, i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) {
            out.append(h * 16 + l); i += 3
        } else {
            out.append(u[i]); i += 1
        }
    }
    return String(decoding: out, as: UTF8.self)
}
