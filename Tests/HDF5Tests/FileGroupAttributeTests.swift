import CHDF5
import Foundation
import LocusTestSupport
import XCTest

@testable import HDF5

final class FileGroupAttributeTests: HDF5TestCase {

    func testCreateFileGroupDatasetAttributesAndReadBack() throws {
        let p = path("basic.h5")
        do {
            let f = try File.create(p)
            let root = try f.root
            XCTAssertEqual(root.path, "/")
            let g = try root.createGroup("g")
            XCTAssertEqual(g.path, "/g")
            let sub = try g.createGroup("sub")
            XCTAssertEqual(sub.path, "/g/sub")
            try g.setAttribute("text", "héllo ✓ \"q\"")
            try g.setAttribute("empty-text", "")
            try g.setAttribute("i", Int64(-42))
            try g.setAttribute("ia", [Int64(1), -2, Int64.max, Int64.min])
            try g.setAttribute("ie", [Int64]())
            try g.setAttribute("d", 2.5)
            try g.setAttribute("da", [0.1, -1e300, Double.infinity, -0.0])
            try g.setAttribute("de", [Double]())
            try root.setAttribute("root-attr", "at root")
            let ds = try sub.createDataset("x", type: .int64LE, shape: [3])
            XCTAssertEqual(ds.path, "/g/sub/x")
            try [Int64(7), -8, 9].withUnsafeBytes { try ds.write($0, memType: .nativeInt64) }
            try ds.setAttribute("unit", "m")
            try root.createStringDataset("strings", ["a", "", "ü✓"])
            try root.createStringDataset("json", "{\"k\": [1, 2]}")
            try root.createStringDataset("no-strings", [String]())
            try f.close()
            try f.close()   // closing twice is harmless
        }

        let f = try File.open(p)
        let root = try f.root
        XCTAssertEqual(try root.stringAttribute("root-attr"), "at root")
        let g = try root.openGroup("g")
        XCTAssertEqual(try g.stringAttribute("text"), "héllo ✓ \"q\"")
        XCTAssertEqual(try g.stringAttribute("empty-text"), "")
        XCTAssertEqual(try g.int64Attribute("i"), -42)
        XCTAssertEqual(try g.int64Attributes("ia"), [1, -2, Int64.max, Int64.min])
        XCTAssertEqual(try g.int64Attributes("ie"), [])
        XCTAssertEqual(try g.attribute("ie").space.kind, .simple)
        XCTAssertEqual(try g.attribute("ie").space.dims, [0])
        XCTAssertEqual(try g.attribute("i").space.kind, .scalar)
        XCTAssertEqual(try g.doubleAttribute("d"), 2.5)
        let da = try g.doubleAttributes("da")
        XCTAssertEqual(da[0], 0.1)
        XCTAssertEqual(da[1], -1e300)
        XCTAssertEqual(da[2], .infinity)
        XCTAssertEqual(da[3].bitPattern, (-0.0 as Double).bitPattern)
        XCTAssertEqual(try g.doubleAttributes("de"), [])
        // Integers read as doubles too.
        XCTAssertEqual(try g.doubleAttributes("ia").prefix(2), [1, -2])
        XCTAssertEqual(g.attributeNames, ["d", "da", "de", "empty-text", "i", "ia", "ie", "text"])
        XCTAssertTrue(g.hasAttribute("text"))
        XCTAssertFalse(g.hasAttribute("nope"))

        let ds = try g.openGroup("sub").openDataset("x")
        XCTAssertEqual(ds.path, "/g/sub/x")
        XCTAssertEqual(ds.shape, [3])
        XCTAssertEqual(ds.elementCount, 3)
        XCTAssertEqual(try ds.readAll(Int64.self, memType: .nativeInt64), [7, -8, 9])
        XCTAssertEqual(try ds.stringAttribute("unit"), "m")
        XCTAssertEqual(ds.type.typeClass, .integer)
        XCTAssertTrue(ds.type.isSigned)
        XCTAssertTrue(ds.type.isLittleEndian)
        XCTAssertEqual(ds.type.size, 8)
        XCTAssertTrue(ds.type.isEqual(to: .int64LE))
        XCTAssertFalse(ds.type.isEqual(to: .uint64LE))

        XCTAssertEqual(try root.openDataset("strings").readStrings(), ["a", "", "ü✓"])
        XCTAssertEqual(try root.openDataset("json").readStrings(), ["{\"k\": [1, 2]}"])
        XCTAssertEqual(try root.openDataset("json").space.kind, .scalar)
        XCTAssertEqual(try root.openDataset("no-strings").readStrings(), [])
        XCTAssertTrue(try root.openDataset("strings").type.isVariableString)
    }

    func testSettingAnAttributeAgainReplacesItEvenWithAnotherType() throws {
        let f = try File.create(path("replace.h5"))
        let root = try f.root
        try root.setAttribute("a", "text")
        try root.setAttribute("a", Int64(5))
        XCTAssertEqual(try root.int64Attribute("a"), 5)
        try root.setAttribute("a", [1.5, 2.5])
        XCTAssertEqual(try root.doubleAttributes("a"), [1.5, 2.5])
        XCTAssertEqual(root.attributeNames, ["a"])
        try root.deleteAttribute("a")
        XCTAssertFalse(root.hasAttribute("a"))
        XCTAssertEqual(root.attributeNames, [])
    }

    func testTypedAttributeReadsRejectTheWrongType() throws {
        let f = try File.create(path("types.h5"))
        let root = try f.root
        try root.setAttribute("s", "x")
        try root.setAttribute("i", Int64(1))
        try root.setAttribute("pair", [Int64(1), 2])
        let e1 = expectHDF5Error { _ = try root.int64Attribute("s") }
        XCTAssertEqual(e1?.object, "/@s")
        let e2 = expectHDF5Error { _ = try root.stringAttribute("i") }
        XCTAssertEqual(e2?.object, "/@i")
        XCTAssertNotNil(expectHDF5Error { _ = try root.int64Attribute("pair") })
        XCTAssertNotNil(expectHDF5Error { _ = try root.doubleAttribute("s") })
        XCTAssertNotNil(expectHDF5Error { _ = try root.int64Attributes("pair", maxCount: 1) })
    }


    func testAttributeIfPresentOpensOnceAndTellsMissingFromPresent() throws {
        let f = try File.create(path("present.h5"))
        let g = try f.root.createGroup("g")
        try g.setAttribute("s", "text")
        try g.setAttribute("shape", [Int64(3), 4])
        try g.setAttribute("norm", 1.5)
        XCTAssertNil(try g.attributeIfPresent("absent"))
        XCTAssertEqual(try g.attributeIfPresent("s")?.string(), "text")
        XCTAssertEqual(try g.attributeIfPresent("shape")?.int64s(), [3, 4])
        XCTAssertEqual(try g.attributeIfPresent("norm")?.double(), 1.5)
        // The typed reads of one open attribute check its type and count, naming it.
        let shape = try XCTUnwrap(try g.attributeIfPresent("shape"))
        XCTAssertEqual(expectHDF5Error { _ = try shape.int64() }?.object, "/g@shape")
        XCTAssertEqual(expectHDF5Error { _ = try shape.string() }?.object, "/g@shape")
        XCTAssertEqual(try shape.doubles(), [3, 4])   // read again through the same (cached) type and space
        XCTAssertEqual(shape.space.elementCount, 2)
    }
    func testChildNamesAreInAscendingByteOrder() throws {
        let f = try File.create(path("order.h5"))
        let root = try f.root
        let names = ["b", "a", "B", "_x", "a2", "é", "Z", "%25", "a.b", "~", "0"]
        for (i, n) in names.enumerated() {
            if i % 2 == 0 { _ = try root.createGroup(n) } else { _ = try root.createDataset(n, type: .uint8LE, shape: [1]) }
        }
        let expected = names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        XCTAssertEqual(try root.childNames(), expected)
        XCTAssertEqual(try root.createGroup("empty").childNames(), [])
    }

    func testKindOfAndContains() throws {
        let f = try File.create(path("kinds.h5"))
        let root = try f.root
        _ = try root.createGroup("grp")
        _ = try root.createDataset("dset", type: .float32LE, shape: [2])
        // A dangling soft link exists as a link but points at nothing.
        XCTAssertGreaterThanOrEqual(H5Lcreate_soft("/nowhere", root.id, "dangling", locus_H5P_DEFAULT(), locus_H5P_DEFAULT()), 0)
        // A committed (named) datatype is neither a group nor a dataset.
        let t = H5Tcopy(locus_H5T_STD_I32LE())
        XCTAssertGreaterThanOrEqual(H5Tcommit2(root.id, "named-type", t, locus_H5P_DEFAULT(), locus_H5P_DEFAULT(), locus_H5P_DEFAULT()), 0)
        H5Tclose(t)

        XCTAssertEqual(root.kind(of: "grp"), .group)
        XCTAssertEqual(root.kind(of: "dset"), .dataset)
        XCTAssertEqual(root.kind(of: "named-type"), .other)
        XCTAssertEqual(root.kind(of: "dangling"), .other)
        XCTAssertNil(root.kind(of: "missing"))
        XCTAssertTrue(root.contains("grp"))
        XCTAssertTrue(root.contains("dset"))
        XCTAssertTrue(root.contains("dangling"))
        XCTAssertFalse(root.contains("missing"))
        // A path through a missing group is not an error, just absent.
        XCTAssertFalse(root.contains("missing/deeper"))
        XCTAssertNil(root.kind(of: "missing/deeper"))
    }

    /// Readers must accept fixed-length strings (spec §1.1), whatever their padding.
    func testFixedLengthStringAttributesWrittenByTheCAPIAreReadable() throws {
        let p = path("fixed.h5")
        func writeFixed(_ obj: hid_t, _ name: String, size: Int, pad: H5T_str_t, utf8: Bool = false, _ bytes: [UInt8], dims: [Int]? = nil) {
            let t = H5Tcopy(locus_H5T_C_S1())
            H5Tset_size(t, size)
            H5Tset_strpad(t, pad)
            if utf8 { H5Tset_cset(t, H5T_CSET_UTF8) }
            let space: hid_t
            if let dims {
                var d = dims.map { hsize_t($0) }
                space = H5Screate_simple(Int32(d.count), &d, nil)
            } else {
                space = H5Screate(H5S_SCALAR)
            }
            let a = H5Acreate2(obj, name, t, space, locus_H5P_DEFAULT(), locus_H5P_DEFAULT())
            XCTAssertGreaterThanOrEqual(a, 0)
            var buf = bytes
            XCTAssertGreaterThanOrEqual(H5Awrite(a, t, &buf), 0)
            H5Aclose(a); H5Sclose(space); H5Tclose(t)
        }
        func padded(_ s: String, _ n: Int, with pad: UInt8 = 0) -> [UInt8] {
            let u = Array(s.utf8)
            return u + [UInt8](repeating: pad, count: n - u.count)
        }
        do {
            let f = try File.create(p)
            let root = try f.root
            writeFixed(root.id, "nullterm", size: 8, pad: H5T_STR_NULLTERM, padded("locus", 8))
            writeFixed(root.id, "nullpad", size: 6, pad: H5T_STR_NULLPAD, padded("1.0", 6))
            writeFixed(root.id, "spacepad", size: 10, pad: H5T_STR_SPACEPAD, padded("mask", 10, with: 0x20))
            writeFixed(root.id, "full", size: 5, pad: H5T_STR_NULLPAD, Array("12345".utf8))
            writeFixed(root.id, "utf8", size: 4, pad: H5T_STR_NULLPAD, utf8: true, padded("é", 4))
            writeFixed(root.id, "array", size: 3, pad: H5T_STR_NULLPAD, padded("ab", 3) + padded("c", 3), dims: [2])
            try f.close()
        }
        let f = try File.open(p)
        let root = try f.root
        XCTAssertEqual(try root.stringAttribute("nullterm"), "locus")
        XCTAssertEqual(try root.stringAttribute("nullpad"), "1.0")
        XCTAssertEqual(try root.stringAttribute("spacepad"), "mask")
        XCTAssertEqual(try root.stringAttribute("full"), "12345")
        XCTAssertEqual(try root.stringAttribute("utf8"), "é")
        XCTAssertFalse(try root.attribute("nullterm").type.isVariableString)
        XCTAssertEqual(try root.attribute("array").readStrings(), ["ab", "c"])
        // Two strings are not one.
        XCTAssertNotNil(expectHDF5Error { _ = try root.stringAttribute("array") })
    }

    func testFileSizeFlushAndIsHDF5() throws {
        let p = path("size.h5")
        let f = try File.create(p)
        let ds = try f.root.createDataset("d", type: .uint8LE, shape: [10_000])
        try [UInt8](repeating: 7, count: 10_000).withUnsafeBytes { try ds.write($0, memType: .nativeUInt8) }
        try f.flush()
        XCTAssertGreaterThanOrEqual(f.size, 10_000)
        try f.close()
        XCTAssertTrue(File.isHDF5(p))
        XCTAssertFalse(File.isHDF5(path("missing.h5")))
        try writeBytes(Array("not an HDF5 file at all, just text".utf8), to: path("text.txt"))
        XCTAssertFalse(File.isHDF5(path("text.txt")))
        let attrs = try FileManager.default.attributesOfItem(atPath: p)
        XCTAssertGreaterThanOrEqual((attrs[.size] as? Int) ?? 0, 10_000)
    }

    func testReadWriteModeModifiesAnExistingFile() throws {
        let p = path("rw.h5")
        do {
            let f = try File.create(p)
            try f.root.setAttribute("v", Int64(1))
            try f.close()
        }
        do {
            let f = try File.open(p, mode: .readWrite)
            try f.root.setAttribute("v", Int64(2))
            try f.root.setAttribute("w", "new")
            try f.close()
        }
        let f = try File.open(p)
        XCTAssertEqual(try f.root.int64Attribute("v"), 2)
        XCTAssertEqual(try f.root.stringAttribute("w"), "new")
        // A read-only file refuses writes with an error, not a crash.
        XCTAssertNotNil(expectHDF5Error { try f.root.setAttribute("x", Int64(3)) })
    }
}
