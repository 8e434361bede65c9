import Foundation
import LocusRandom
import LocusTestSupport
import XCTest

@testable import HDF5

final class DatasetLayoutTests: HDF5TestCase {

    func testHyperslabRowWritesAndReads() throws {
        let p = path("rows.h5")
        let rows = 6, cols = 3
        let all = (0..<(rows * cols)).map { Int64($0 * 10 - 7) }
        do {
            let f = try File.create(p)
            let ds = try f.root.createDataset("m", type: .int64LE, shape: [rows, cols])
            // Rows [0,2), [2,5), [5,6) in three writes, out of order.
            for (start, count) in [(2, 3), (0, 2), (5, 1)] {
                let block = Array(all[(start * cols)..<((start + count) * cols)])
                try block.withUnsafeBytes { try ds.write($0, memType: .nativeInt64, start: [start, 0], count: [count, cols]) }
            }
            try f.close()
        }
        let f = try File.open(p)
        let ds = try f.root.openDataset("m")
        XCTAssertEqual(ds.shape, [rows, cols])
        XCTAssertEqual(try ds.readAll(Int64.self, memType: .nativeInt64), all)
        var block = [Int64](repeating: 0, count: 2 * cols)
        try block.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeInt64, start: [3, 0], count: [2, cols]) }
        XCTAssertEqual(block, Array(all[(3 * cols)..<(5 * cols)]))
        // A column block.
        var column = [Int64](repeating: 0, count: rows)
        try column.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeInt64, start: [0, 1], count: [rows, 1]) }
        XCTAssertEqual(column, (0..<rows).map { all[$0 * cols + 1] })
        // Converting on read: int64 → double.
        var doubles = [Double](repeating: 0, count: cols)
        try doubles.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeDouble, start: [1, 0], count: [1, cols]) }
        XCTAssertEqual(doubles, all[cols..<(2 * cols)].map(Double.init))
        // An empty block reads nothing and succeeds.
        var none = [Int64]()
        try none.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeInt64, start: [0, 0], count: [0, cols]) }
    }

    func testHyperslabOutsideTheDatasetThrows() throws {
        let f = try File.create(path("oob.h5"))
        let ds = try f.root.createDataset("m", type: .float32LE, shape: [4, 2])
        var buf = [Float](repeating: 0, count: 4)
        let e = expectHDF5Error {
            try buf.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeFloat, start: [3, 0], count: [2, 2]) }
        }
        XCTAssertEqual(e?.object, "/m")
        XCTAssertNotNil(expectHDF5Error {
            try buf.withUnsafeBytes { try ds.write($0, memType: .nativeFloat, start: [4, 0], count: [2, 2]) }
        })
    }

    func testChunkedDatasetReportsItsFiltersInPipelineOrder() throws {
        let p = path("chunked.h5")
        let values = (0..<5000).map { UInt32($0 / 7) }
        do {
            let f = try File.create(p)
            let dcpl = try PropertyList.datasetCreate()
            try dcpl.setChunk([1024])
            try dcpl.addShuffle()
            try dcpl.addDeflate(level: 4)
            try dcpl.addFletcher32()
            let ds = try f.root.createDataset("c", type: .uint32LE, shape: [values.count], properties: dcpl)
            try values.withUnsafeBytes { try ds.write($0, memType: .nativeUInt32) }
            XCTAssertNil(ds.dataOffset, "chunked data has no single offset")
            try f.close()
        }
        let f = try File.open(p)
        let ds = try f.root.openDataset("c")
        let dcpl = ds.creationProperties
        XCTAssertEqual(dcpl.layout, .chunked)
        XCTAssertEqual(dcpl.chunkDims, [1024])
        XCTAssertEqual(dcpl.filters, [2, 1, 3])
        XCTAssertEqual(try ds.readAll(UInt32.self, memType: .nativeUInt32), values)
        XCTAssertLessThan(ds.storageSize, values.count * 4, "repetitive data compresses")
        XCTAssertNil(ds.dataOffset)
    }

    func testRawChunkIsTheStoredBytesWithTheirFletcher32() throws {
        let p = path("raw.h5")
        var rng = SplitMix64(seed: 7)
        let values = (0..<2500).map { _ in UInt8(truncatingIfNeeded: rng.next() % 3 == 0 ? rng.next() : 0) }
        do {
            let f = try File.create(p)
            for (name, deflate) in [("plain", false), ("deflated", true)] {
                let dcpl = try PropertyList.datasetCreate()
                try dcpl.setChunk([1000])
                if deflate { try dcpl.addDeflate(level: 4) }
                try dcpl.addFletcher32()
                let ds = try f.root.createDataset(name, type: .uint8LE, shape: [values.count], properties: dcpl)
                try values.withUnsafeBytes { try ds.write($0, memType: .nativeUInt8) }
            }
            try f.close()
        }
        let f = try File.open(p)
        var raw: [UInt8] = []
        let plain = try f.root.openDataset("plain")
        // The checksum filter alone: the chunk's bytes, then 4 checksum bytes libhdf5 accepts.
        let middle = try XCTUnwrap(try plain.readRawChunk(at: [1000], limit: 1 << 20, into: &raw))
        XCTAssertEqual(middle.count, 1004)
        XCTAssertEqual(middle.skippedFilters, 0)
        XCTAssertEqual(Array(raw[0..<1000]), Array(values[1000..<2000]))
        XCTAssertTrue(raw.withUnsafeBytes { Fletcher32.verify(UnsafeRawBufferPointer(rebasing: $0[0..<1004])) })
        raw[500] ^= 0x10
        XCTAssertFalse(raw.withUnsafeBytes { Fletcher32.verify(UnsafeRawBufferPointer(rebasing: $0[0..<1004])) })
        // The edge chunk is stored full size; the part past the dataset's end is fill.
        let edge = try XCTUnwrap(try plain.readRawChunk(at: [2000], limit: 1 << 20, into: &raw))
        XCTAssertEqual(edge.count, 1004)
        XCTAssertEqual(Array(raw[0..<500]), Array(values[2000..<2500]))
        XCTAssertTrue(raw.withUnsafeBytes { Fletcher32.verify(UnsafeRawBufferPointer(rebasing: $0[0..<1004])) })
        // Deflated: fewer bytes, still checksummed; over the limit, nothing is read.
        let deflated = try f.root.openDataset("deflated")
        let packed = try XCTUnwrap(try deflated.readRawChunk(at: [0], limit: 1 << 20, into: &raw))
        XCTAssertLessThan(packed.count, 1004)
        XCTAssertTrue(raw.withUnsafeBytes { Fletcher32.verify(UnsafeRawBufferPointer(rebasing: $0[0..<packed.count])) })
        XCTAssertNil(try deflated.readRawChunk(at: [0], limit: 8, into: &raw))
        // Known values of the sum (16-bit words, high byte first; an odd byte is a high half).
        XCTAssertEqual([UInt8]([0x01, 0x02]).withUnsafeBytes { Fletcher32.checksum($0) }, 0x0102_0102)
        XCTAssertEqual([UInt8]([0x01, 0x02, 0x03]).withUnsafeBytes { Fletcher32.checksum($0) }, 0x0504_0402)
    }

    func testContiguousDatasetHasADataOffsetAndNoFilters() throws {
        let p = path("contig.h5")
        do {
            let f = try File.create(p)
            let ds = try f.root.createDataset("d", type: .float64LE, shape: [100])
            try [Double](repeating: 1.5, count: 100).withUnsafeBytes { try ds.write($0, memType: .nativeDouble) }
            try f.close()
        }
        let f = try File.open(p)
        let ds = try f.root.openDataset("d")
        XCTAssertEqual(ds.creationProperties.layout, .contiguous)
        XCTAssertNil(ds.creationProperties.chunkDims)
        XCTAssertEqual(ds.creationProperties.filters, [])
        XCTAssertEqual(ds.storageSize, 800)
        let offset = try XCTUnwrap(ds.dataOffset)
        XCTAssertGreaterThan(offset, 0)
        // The offset really points at the data.
        let bytes = try readBytes(p)
        let stored = bytes[offset..<(offset + 8)].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(UInt64(littleEndian: stored), (1.5 as Double).bitPattern)
    }

    func testAlignmentOptionAlignsEveryDatasetTo4096() throws {
        let p = path("aligned.h5")
        let sizes = [1, 3, 100, 5000, 4096, 7]
        do {
            let f = try File.create(p, options: .init(alignment: 4096))
            for (i, n) in sizes.enumerated() {
                let ds = try f.root.createDataset("d\(i)", type: .uint8LE, shape: [n])
                try [UInt8](repeating: UInt8(i + 1), count: n).withUnsafeBytes { try ds.write($0, memType: .nativeUInt8) }
                try ds.setAttribute("note", "dataset \(i)")
            }
            try f.close()
        }
        let f = try File.open(p)
        let bytes = try readBytes(p)
        for (i, n) in sizes.enumerated() {
            let ds = try f.root.openDataset("d\(i)")
            let offset = try XCTUnwrap(ds.dataOffset, "d\(i)")
            XCTAssertEqual(offset % 4096, 0, "d\(i) starts at \(offset)")
            XCTAssertEqual(Array(bytes[offset..<(offset + n)]), [UInt8](repeating: UInt8(i + 1), count: n))
        }
    }

    func testScalarAndZeroSizeDatasets() throws {
        let p = path("shapes.h5")
        do {
            let f = try File.create(p)
            let s = try f.root.createDataset("scalar", type: .float32LE, shape: [])
            try [Float(3.25)].withUnsafeBytes { try s.write($0, memType: .nativeFloat) }
            _ = try f.root.createDataset("empty", type: .int16LE, shape: [0, 5])
            try f.close()
        }
        let f = try File.open(p)
        let s = try f.root.openDataset("scalar")
        XCTAssertEqual(s.space.kind, .scalar)
        XCTAssertEqual(s.shape, [])
        XCTAssertEqual(s.elementCount, 1)
        XCTAssertEqual(try s.readFloats(), [3.25])
        let e = try f.root.openDataset("empty")
        XCTAssertEqual(e.shape, [0, 5])
        XCTAssertEqual(e.elementCount, 0)
        XCTAssertEqual(e.storageSize, 0)
        XCTAssertEqual(try e.readAll(Int16.self, memType: .int16LE), [])
    }
}
