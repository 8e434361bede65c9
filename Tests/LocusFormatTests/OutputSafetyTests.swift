import Foundation
@testable import LocusFormat
import LocusRender
import LocusTestSupport
import XCTest

/// The publishing rules of spec/FORMAT.md §7, at the library level (the CLI cases are in
/// interop/tests/test_reliability.py).
final class OutputSafetyTests: LocusTestCase {

    func testOutputThatIsAnInputThroughALinkIsRefused() throws {
        let input = path("in.h5"), link = path("link.h5")
        try writeBytes([1, 2, 3], to: input)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: input)
        _ = expectLocusError(mentioning: link, {
            try OutputSafety.check(outputs: [.init("output", link)], inputs: [.init("base", input)])
        })
        // Documented in-place rewriting is allowed for the named input only.
        XCTAssertNoThrow(try OutputSafety.check(outputs: [.init("output", link, rewritesInput: "base")], inputs: [.init("base", input)]))
    }

    func testTwoOutputsSpelledDifferentlyAreOneFile() throws {
        let a = path("a.h5"), b = directory + "/./a.h5"
        _ = expectLocusError(mentioning: b, {
            try OutputSafety.check(outputs: [.init("output", a), .init("task vector", b)], inputs: [])
        })
    }

    func testTemporaryNamesRecordHostAndProcess() {
        let name = StaleTemporaries.name(base: "model-v2.h5")
        guard let owner = StaleTemporaries.owner(of: name) else { return XCTFail("unparsed: \(name)") }
        XCTAssertEqual(owner.pid, getpid())
        XCTAssertEqual(owner.host, StaleTemporaries.host)
        XCTAssertNil(StaleTemporaries.owner(of: "model.h5"))
        XCTAssertNil(StaleTemporaries.owner(of: ".m.h5.locus-tmp-host-notapid-ff"))
    }

    func testGroupPublishesAllOrNothing() throws {
        let a = path("first.h5"), b = path("second.h5")
        struct Failure: Error {}
        XCTAssertThrowsError(try OutputGroup.publishTogether {
            try writeAtomically(to: a) { try Data([1]).write(to: URL(fileURLWithPath: $0)) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: a), "published before the group ended")
            throw Failure()
        })
        XCTAssertEqual(try listing(), [], "a member of a failed group was left")
        try OutputGroup.publishTogether {
            try writeAtomically(to: a) { try Data([1]).write(to: URL(fileURLWithPath: $0)) }
            try writeAtomically(to: b) { try Data([2]).write(to: URL(fileURLWithPath: $0)) }
        }
        XCTAssertEqual(try listing(), ["first.h5", "second.h5"])
    }

    func testNonFiniteNumbersPrintWithoutTrapping() {
        XCTAssertEqual(TextFormat.number(.nan), "nan")
        XCTAssertEqual(TextFormat.number(.infinity), "inf")
        XCTAssertEqual(TextFormat.number(-.infinity), "-inf")
        let values: [Float] = [3, .nan, 1, .infinity, 2]
        let q = values.withUnsafeBufferPointer { Summaries.quantiles($0) }
        XCTAssertEqual(q.count, 5)
        XCTAssertEqual(q[0], 1)
    }
}
