import Foundation
import LocusRandom
import XCTest

// Helpers every test target shares (one copy instead of one per target). This module is only
// linked into test targets.

/// Each test gets a fresh directory named after its test class, removed in tearDown.
open class ScratchDirectoryTestCase: XCTestCase {
    public private(set) var directory = ""

    open override func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(type(of: self))-\(UUID().uuidString)", isDirectory: true).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    open override func tearDownWithError() throws {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        try super.tearDownWithError()
    }

    /// `name` inside the test's directory.
    public func path(_ name: String) -> String { directory + "/" + name }

    /// Every entry of the test directory, hidden ones included, sorted.
    public func listing() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: directory).sorted() }

    /// Writes `bytes` to `name` in the test directory; returns its path.
    @discardableResult
    public func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path(name)
        try writeBytes(bytes, to: p)
        return p
    }
}

extension XCTestCase {
    /// A fresh directory removed after the test (for test classes that are not scratch-directory cases).
    public func makeTemporaryDirectory() throws -> String {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(type(of: self))-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }
}

/// Requires `body` to throw an `E` whose description is one line containing every string of
/// `mentioning`, and returns it (nil after recording the failure).
@discardableResult
public func expectError<E: Error>(_: E.Type, mentioning: [String] = [], file: StaticString = #filePath, line: UInt = #line,
                                  _ body: () throws -> Void) -> E? {
    do {
        try body()
        XCTFail("expected \(E.self)\(mentioning.isEmpty ? "" : " mentioning \(mentioning)"), nothing was thrown", file: file, line: line)
    } catch let e as E {
        let text = String(describing: e)
        XCTAssertFalse(text.contains("\n"), "error is not one line: \(text)", file: file, line: line)
        for m in mentioning {
            XCTAssertTrue(text.contains(m), "error '\(text)' does not mention '\(m)'", file: file, line: line)
        }
        return e
    } catch {
        XCTFail("expected \(E.self), got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

public func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

public func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// The repository root (…/Tests/LocusTestSupport/TestSupport.swift → …), for fixtures/.
public let repositoryRoot: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}()

/// Test data on the project's one seeded generator, so failures reproduce bit for bit.
extension SplitMix64 {
    public mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { unitDouble() }
    public mutating func floats(_ n: Int, in range: ClosedRange<Float>) -> [Float] {
        (0..<n).map { _ in range.lowerBound + Float(unit()) * (range.upperBound - range.lowerBound) }
    }
}

/// A well-formed base fingerprint for files whose base does not matter to the test.
public let someFingerprint = "sha256:" + String(repeating: "ab", count: 32)
