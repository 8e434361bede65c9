import Foundation
import HDF5
import LocusRandom
import LocusTestSupport
import XCTest

@testable import LocusFormat

/// Mask chunks decoded outside libhdf5 (`RawChunkReader`) give exactly what libhdf5's own read
/// gives, on any range; pipelines it does not decode, and damaged chunks, go through libhdf5.
final class RawChunkReaderTests: LocusTestCase {

    private func maskLike(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in rng.next() % 4 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : 0 }
    }

    private func write(_ p: String, _ values: [UInt8], chunk: Int, filters: [Int]) throws {
        let f = try File.create(p)
        let dcpl = try PropertyList.datasetCreate()
        try dcpl.setChunk([chunk])
        for id in filters {
            switch id {
            case 1: try dcpl.addDeflate(level: 4)
            case 2: try dcpl.addShuffle()
            default: try dcpl.addFletcher32()
            }
        }
        let ds = try f.root.createDataset("mask", type: .uint8LE, shape: [values.count], properties: dcpl)
        try values.withUnsafeBytes { try ds.write($0, memType: .nativeUInt8) }
        try f.close()
    }

    func testEveryRangeMatchesLibhdf5ForEachPipelineDecodedHere() throws {
        let values = maskLike(5000, seed: 3)
        for (i, filters) in [[1, 3], [1], [3], []].enumerated() {
            let p = path("m\(i).h5")
            try write(p, values, chunk: 1024, filters: filters)
            let f = try File.open(p)
            let ds = try f.root.openDataset("mask")
            let reader = try XCTUnwrap(RawChunkReader(ds), "pipeline \(filters)")
            for (start, n) in [(0, 5000), (0, 1024), (1000, 100), (1024, 2048), (4090, 910), (4999, 1), (3072, 1024)] {
                var got = [UInt8](repeating: 0xAA, count: n)
                try got.withUnsafeMutableBytes { try reader.read(from: start, into: $0) }
                XCTAssertEqual(got, Array(values[start..<(start + n)]), "pipeline \(filters), range \(start)+\(n)")
            }
            XCTAssertGreaterThan(reader.decodedChunks, 0)
            XCTAssertEqual(reader.libraryReads, 0, "pipeline \(filters): every chunk decoded here")
        }
    }

    func testOtherPipelinesAreLeftToLibhdf5() throws {
        let p = path("shuffled.h5")
        try write(p, maskLike(3000, seed: 4), chunk: 1000, filters: [2, 1, 3])
        let f = try File.open(p)
        XCTAssertNil(RawChunkReader(try f.root.openDataset("mask")))
    }

    func testADamagedChunkIsReadThroughLibhdf5WhichRefusesIt() throws {
        let values = maskLike(3000, seed: 5)
        let p = path("damaged.h5")
        try write(p, values, chunk: 1000, filters: [1, 3])
        // Find the second chunk's stored bytes in the file and change one of them.
        var stored: [UInt8] = []
        do {
            let f = try File.open(p)
            let n = try XCTUnwrap(try f.root.openDataset("mask").readRawChunk(at: [1000], limit: 1 << 20, into: &stored)).count
            stored = Array(stored[0..<n])
        }
        var bytes = try readBytes(p)
        let at = try XCTUnwrap((0...(bytes.count - stored.count)).first { Array(bytes[$0..<($0 + stored.count)]) == stored })
        bytes[at + stored.count / 2] ^= 0x01
        try writeBytes(bytes, to: p)
        let f = try File.open(p)
        let reader = try XCTUnwrap(RawChunkReader(try f.root.openDataset("mask")))
        var got = [UInt8](repeating: 0, count: 1000)
        try got.withUnsafeMutableBytes { try reader.read(from: 0, into: $0) }   // the first chunk is intact
        XCTAssertEqual(got, Array(values[0..<1000]))
        XCTAssertThrowsError(try got.withUnsafeMutableBytes { try reader.read(from: 1000, into: $0) }) { error in
            XCTAssertTrue("\(error)".contains("/mask"), "\(error)")
        }
        XCTAssertEqual(reader.libraryReads, 1)
    }

    func testTaskVectorStreamDecodesMaskChunksAndReadsValuesDirectly() throws {
        // 40 000 entries at density 0.3: bitmask encoding, a 5 000-byte mask (chunked), contiguous values.
        var rng = SplitMix64(seed: 9)
        let count = 40_000
        let dense = (0..<count).map { _ -> Float in rng.unit() < 0.3 ? Float(rng.unit()) - 0.5 : 0 }
        let p = path("tv.h5")
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "w", shape: [200, 200], dense: dense)
        try w.finish()
        let r = try TaskVectorReader(path: p)
        let t = try XCTUnwrap(r.tensors.first)
        XCTAssertEqual(t.encoding, .bitmask)
        let expected = try r.readSparse(t)
        let stream = try TaskVectorEntryStream(r, t, scale: 1)
        XCTAssertTrue(stream.readsValuesDirectly)
        let block = EntryBlock(capacity: 7000)
        var indices: [Int] = [], values: [Float] = []
        var a = 0
        while a < count {
            let b = min(count, a + 7000)
            block.count = 0
            try stream.next(upTo: b, into: block)
            for k in 0..<block.count { indices.append(a + Int(block.offsets[k])); values.append(block.values[k]) }
            a = b
        }
        XCTAssertEqual(indices, expected.indices)
        XCTAssertEqual(values, expected.values)
        XCTAssertGreaterThan(stream.maskChunkReads.decoded, 0)
        XCTAssertEqual(stream.maskChunkReads.throughLibrary, 0)
    }
}
