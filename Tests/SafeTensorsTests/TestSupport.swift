import Foundation
import LocusRandom
import LocusTestSupport
import XCTest

@testable import SafeTensors

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    var bytes = [UInt8]()
    bytes.reserveCapacity(count)
    while bytes.count < count {
        let word = generator.next()
        for shift in stride(from: 0, to: 64, by: 8) where bytes.count < count {
            bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
        }
    }
    return bytes
}

/// A whole file image: 8-byte little-endian length (the header's own length unless overridden),
/// the header bytes, then the data section.
func fileImage(header: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let length = declaredLength ?? UInt64(header.count)
    var bytes: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
    bytes += header
    bytes += data
    return bytes
}

func fileImage(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    fileImage(header: Array(header.utf8), data: data, declaredLength: declaredLength)
}

func writeFile(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// One entry's JSON, for hand-made headers.
func entryJSON(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
    "{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
}

extension XCTestCase {
    /// Runs `body`, requires it to throw a `SafeTensorsError`, and returns it.
    func expectSafeTensorsError(
        _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line
    ) -> SafeTensorsError? {
        do {
            try body()
            XCTFail("expected a SafeTensorsError, but nothing was thrown", file: file, line: line)
            return nil
        } catch let error as SafeTensorsError {
            return error
        } catch {
            XCTFail("expected a SafeTensorsError, got \(error)", file: file, line: line)
            return nil
        }
    }

    /// Checks scope, object and that the message contains every fragment.
    func assertError(
        _ error: SafeTensorsError?, scope: SafeTensorsError.Scope, object: String? = nil,
        contains fragments: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let error else { return }  // expectSafeTensorsError already failed.
        XCTAssertEqual(error.scope, scope, "scope of: \(error)", file: file, line: line)
        XCTAssertEqual(error.object, object, "object of: \(error)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(
                error.message.contains(fragment), "message \"\(error.message)\" lacks \"\(fragment)\"",
                file: file, line: line)
        }
        XCTAssertFalse(error.description.contains("\n"), "description must be one line: \(error)", file: file, line: line)
    }
}
