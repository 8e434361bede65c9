import Foundation
import LocusRandom
import LocusTestSupport
import XCTest

@testable import HDF5

/// Each test gets a fresh directory, removed in tearDown.
class HDF5TestCase: ScratchDirectoryTestCase {

    /// Requires `body` to throw an HDF5Error and returns it.
    func expectHDF5Error(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> HDF5Error? {
        LocusTestSupport.expectError(HDF5Error.self, file: file, line: line, body)
    }
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
