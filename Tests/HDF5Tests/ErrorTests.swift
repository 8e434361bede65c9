import Foundation
import LocusTestSupport
import XCTest

@testable import HDF5

final class ErrorTests: HDF5TestCase {

    private func assertOpenFailure(_ p: String, file: StaticString = #filePath, line: UInt = #line) {
        let e = expectHDF5Error({ _ = try File.open(p) }, file: file, line: line)
        guard let e else { return }
        XCTAssertEqual(e.file, p, file: file, line: line)
        XCTAssertTrue(e.description.contains(p), "description lacks the path: \(e)", file: file, line: line)
        XCTAssertFalse(e.stack.trimmingCharacters(in: .whitespaces).isEmpty, "no HDF5 stack message: \(e)", file: file, line: line)
        XCTAssertTrue(e.description.contains(e.stack), file: file, line: line)
    }

    func testOpeningAMissingFileThrows() {
        assertOpenFailure(path("does-not-exist.h5"))
    }

    func testOpeningANonHDF5FileThrows() throws {
        let p = path("text.h5")
        try writeBytes(Array(String(repeating: "this is plain text, not HDF5.\n", count: 40).utf8), to: p)
        assertOpenFailure(p)
    }

    func testOpeningATruncatedHDF5FileThrows() throws {
        let p = path("truncated.h5")
        do {
            let f = try File.create(p)
            let ds = try f.root.createDataset("d", type: .uint8LE, shape: [65_536])
            try [UInt8](repeating: 9, count: 65_536).withUnsafeBytes { try ds.write($0, memType: .nativeUInt8) }
            try f.root.setAttribute("after", "data")
            try f.close()
        }
        let bytes = try readBytes(p)
        try writeBytes(Array(bytes.prefix(bytes.count / 2)), to: p)
        XCTAssertTrue(File.isHDF5(p), "the signature is still there")
        assertOpenFailure(p)
    }

    func testOpeningAMissingObjectNamesItsPath() throws {
        let p = path("objects.h5")
        let f = try File.create(p)
        let root = try f.root
        let g = try root.createGroup("g")
        _ = try g.createDataset("present", type: .uint8LE, shape: [1])

        let e1 = expectHDF5Error { _ = try root.openDataset("nope") }
        XCTAssertEqual(e1?.object, "/nope")
        XCTAssertEqual(e1?.file, p)
        XCTAssertTrue(e1?.description.contains("/nope") ?? false)
        XCTAssertTrue(e1?.description.contains("open dataset") ?? false)
        XCTAssertFalse(e1?.stack.isEmpty ?? true)

        let e2 = expectHDF5Error { _ = try g.openDataset("missing") }
        XCTAssertEqual(e2?.object, "/g/missing")
        XCTAssertTrue(e2?.description.contains("/g/missing") ?? false)

        let e3 = expectHDF5Error { _ = try g.openGroup("present") }   // a dataset, not a group
        XCTAssertEqual(e3?.object, "/g/present")

        let e4 = expectHDF5Error { _ = try g.attribute("missing-attr") }
        XCTAssertEqual(e4?.object, "/g@missing-attr")

        let e5 = expectHDF5Error { _ = try g.createDataset("present", type: .uint8LE, shape: [1]) }
        XCTAssertEqual(e5?.object, "/g/present")

        // The error stack does not leak into the next successful call.
        XCTAssertEqual(try g.openDataset("present").shape, [1])
    }

    func testWronglySizedBuffersThrowInsteadOfTrapping() throws {
        let f = try File.create(path("buffers.h5"))
        let ds = try f.root.createDataset("d", type: .float32LE, shape: [4, 3])
        let good = [Float](repeating: 1, count: 12)
        try good.withUnsafeBytes { try ds.write($0, memType: .nativeFloat) }

        var small = [Float](repeating: 0, count: 11)
        let e1 = expectHDF5Error { try small.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeFloat) } }
        XCTAssertEqual(e1?.object, "/d")
        XCTAssertTrue(e1?.description.contains("44") ?? false, "\(String(describing: e1))")
        var big = [Float](repeating: 0, count: 13)
        XCTAssertNotNil(expectHDF5Error { try big.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeFloat) } })
        // Right element count, wrong element size.
        var doubles = [Float](repeating: 0, count: 12)
        XCTAssertNotNil(expectHDF5Error { try doubles.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeDouble) } })
        XCTAssertNotNil(expectHDF5Error { try small.withUnsafeBytes { try ds.write($0, memType: .nativeFloat) } })
        var row = [Float](repeating: 0, count: 2)
        XCTAssertNotNil(expectHDF5Error {
            try row.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeFloat, start: [0, 0], count: [1, 3]) }
        })
        XCTAssertNotNil(expectHDF5Error {
            try row.withUnsafeBytes { try ds.write($0, memType: .nativeFloat, start: [0, 0], count: [1, 3]) }
        })
        try f.root.setAttribute("ints", [Int64(1), 2, 3])
        var two = [Int64](repeating: 0, count: 2)
        XCTAssertNotNil(expectHDF5Error {
            try two.withUnsafeMutableBytes { try f.root.attribute("ints").read(into: $0, memType: .nativeInt64) }
        })
        // Everything still intact.
        XCTAssertEqual(try ds.readFloats(), good)
    }

    func testErrorDescriptionFormat() {
        let e = HDF5Error(file: "/x.h5", object: "/g", operation: "open group", stack: "not found (H5G)")
        XCTAssertEqual(e.description, "/x.h5: /g: open group failed: not found (H5G)")
        let bare = HDF5Error(file: nil, object: nil, operation: "create", stack: "")
        XCTAssertEqual(bare.description, "create failed")
    }
}
