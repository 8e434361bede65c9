import Foundation
@testable import LocusFormat
import XCTest

/// The root `created` attribute: RFC 3339 in UTC, from the C library's calendar arithmetic.
final class ArtifactTimestampTests: XCTestCase {
    func testTimestampsAreUTCWithZeroPaddedFields() {
        XCTAssertEqual(ArtifactWriter.timestamp(0), "1970-01-01T00:00:00Z")
        XCTAssertEqual(ArtifactWriter.timestamp(1_796_000_000), "2026-11-30T00:53:20Z")   // as Python's datetime prints it
        XCTAssertEqual(ArtifactWriter.timestamp(951_782_400), "2000-02-29T00:00:00Z")      // a leap day
        let now = ArtifactWriter.timestamp()
        XCTAssertNotNil(now.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"#, options: .regularExpression), now)
    }
}
