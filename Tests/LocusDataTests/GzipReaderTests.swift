import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

final class GzipReaderTests: DataTestCase {
    func payload(_ n: Int = 200_000) -> [UInt8] {
        // Compressible but not trivial.
        var r = TestRNG(7)
        return (0..<n).map { i in i % 7 == 0 ? r.bytes(1)[0] : UInt8(i % 13) }
    }

    func testPlainFileIsReturnedAsIs() throws {
        let p = try write("plain.bin", [3, 1, 4, 1, 5])
        XCTAssertEqual(try GzipReader.read(p), [3, 1, 4, 1, 5])
        let empty = try write("empty", [])
        XCTAssertEqual(try GzipReader.read(empty), [])
    }

    func testGzipRoundTripDetectedByMagicNotName() throws {
        let data = payload()
        let p = try write("looks-plain.csv", gzip(data))
        XCTAssertEqual(try GzipReader.read(p), data)
        XCTAssertEqual(try GzipReader.decompress(gzip([]), file: "x"), [])
    }

    func testConcatenatedMembersAreRead() throws {
        let a = payload(1000), b = Array(payload(5000).reversed())
        let p = try write("two.gz", gzip(a) + gzip(b, level: 1))
        XCTAssertEqual(try GzipReader.read(p), a + b)
    }

    func testWrongLengthInTrailerIsCorrupt() throws {
        var z = gzip(payload())
        let n = z.count
        z[n - 4] = 5; z[n - 3] = 0; z[n - 2] = 0; z[n - 1] = 0   // ISIZE: only a hint for the allocation, but zlib checks it
        let p = try write("hint.gz", z)
        expectError("hint.gz", "gzip stream", "corrupt") { _ = try GzipReader.read(p) }
    }

    func testCorruptStream() throws {
        var z = gzip(payload())
        for i in 20..<60 { z[i] ^= 0x5A }
        let p = try write("corrupt.gz", z)
        expectError("corrupt.gz", "gzip stream", "corrupt") { _ = try GzipReader.read(p) }
    }

    func testCorruptChecksum() throws {
        var z = gzip(payload())
        z[z.count - 6] ^= 1   // CRC-32 in the trailer
        let p = try write("crc.gz", z)
        expectError("crc.gz", "corrupt") { _ = try GzipReader.read(p) }
    }

    func testTruncatedStream() throws {
        let z = gzip(payload())
        for cut in [2, 10, z.count / 2, z.count - 1] {
            let p = try write("cut\(cut).gz", Array(z[0..<cut]))
            expectError("cut\(cut).gz", "truncated") { _ = try GzipReader.read(p) }
        }
    }

    func testTrailingGarbage() throws {
        let p = try write("trail.gz", gzip(payload(100)) + [0, 0, 0, 7])
        expectError("trail.gz", "4 unexpected trailing bytes") { _ = try GzipReader.read(p) }
    }

    func testDecompressedSizeLimit() throws {
        let data = [UInt8](repeating: 42, count: 1 << 20)
        let p = try write("bomb.gz", gzip(data))
        expectError("bomb.gz", "more than the limit of 1000 bytes") { _ = try GzipReader.read(p, limit: 1000) }
        XCTAssertEqual(try GzipReader.read(p, limit: 1 << 20).count, 1 << 20)   // exactly at the limit is fine
        expectError("bomb.gz", "limit of \((1 << 20) - 1)") { _ = try GzipReader.read(p, limit: (1 << 20) - 1) }
        let plain = try write("big.bin", data)
        expectError("big.bin", "more than the limit") { _ = try GzipReader.read(plain, limit: 10) }
    }

    func testMissingFileAndDirectory() {
        expectError("nope.gz", "cannot open") { _ = try GzipReader.read(path("nope.gz")) }
        expectError(directory, "not a regular file") { _ = try GzipReader.read(directory) }
    }
}
