import Foundation
import LocusRandom
import XCTest

@testable import HDF5

/// Each test gets a fresh directory, removed in tearDown.
class HDF5TestCase: XCTestCase {
    private(set) var directory = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("HDF5Tests-\(UUID().uuidString)", isDirectory: true).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        try super.tearDownWithError()
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Requires `body` to throw an HDF5Error and returns it.
    func expectHDF5Error(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> HDF5Error? {
        do {
            try body()
            XCTFail("expected an HDF5Error, nothing was thrown", file: file, line: line)
        } catch let e as HDF5Error {
            return e
        } catch {
            XCTFail("expected an HDF5Error, got \(type(of: error)): \(error)", file: file, line: line)
        }
        return nil
    }
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

extension Dataset {
    func readAll<T: FixedWidthInteger>(_: T.Type, memType: Datatype) throws -> [T] {
        var out = [T](repeating: 0, count: elementCount)
        try out.withUnsafeMutableBytes { try read(into: $0, memType: memType) }
        return out
    }
    func readFloats() throws -> [Float] {
        var out = [Float](repeating: 0, count: elementCount)
        try out.withUnsafeMutableBytes { try read(into: $0, memType: .nativeFloat) }
        return out
    }
}
