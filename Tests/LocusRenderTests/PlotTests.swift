import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import HDF5
import LocusFormat
import LocusRender
import LocusTestSupport
import XCTest

/// `locus inspect --plot`: the SVGs parse as XML and show one row per tensor with the right numbers.
final class PlotTests: ScratchDirectoryTestCase {

    /// An element of the parsed SVG.
    final class Node {
        let name: String
        let attributes: [String: String]
        var children: [Node] = []
        var text = ""
        init(name: String, attributes: [String: String]) { self.name = name; self.attributes = attributes }
        /// This node and every descendant, in document order.
        var all: [Node] { [self] + children.flatMap(\.all) }
        func find(_ name: String, class c: String? = nil) -> [Node] {
            all.filter { $0.name == name && (c == nil || $0.attributes["class"] == c) }
        }
        var number: (String) -> Double? { { Double(self.attributes[$0] ?? "") } }
    }

    final class TreeBuilder: NSObject, XMLParserDelegate {
        var stack: [Node] = []
        var root: Node?
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            let n = Node(name: name, attributes: attributes)
            stack.last?.children.append(n)
            if root == nil { root = n }
            stack.append(n)
        }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) { stack.removeLast() }
        func parser(_ parser: XMLParser, foundCharacters string: String) { stack.last?.text += string }
    }

    /// Parses the SVG at `p` with Foundation's XML parser; fails the test on any XML error.
    private func parseSVG(_ p: String, file: StaticString = #filePath, line: UInt = #line) throws -> Node {
        let data = try Data(contentsOf: URL(fileURLWithPath: p))
        let parser = XMLParser(data: data)
        let builder = TreeBuilder()
        parser.delegate = builder
        let ok = parser.parse()
        XCTAssertTrue(ok, "not well-formed XML: \(String(describing: parser.parserError))", file: file, line: line)
        let root = try XCTUnwrap(builder.root, file: file, line: line)
        XCTAssertEqual(root.name, "svg", file: file, line: line)
        XCTAssertEqual(root.attributes["width"], "960", file: file, line: line)
        XCTAssertNotNil(root.attributes["height"].flatMap(Double.init), file: file, line: line)
        XCTAssertEqual(root.attributes["xmlns"], "http://www.w3.org/2000/svg", file: file, line: line)
        return root
    }

    /// Inspects `p`, writes its plot with `InspectPlot.write` and parses it back.
    private func plot(_ p: String, tensor: String? = nil) throws -> (svg: Node, text: String) {
        let out = path((p as NSString).lastPathComponent + ".svg")
        let report = try Inspector.inspect(p, tensor: tensor, stats: tensor != nil)
        try InspectPlot.write(try InspectPlot.svg(report), to: out)
        XCTAssertEqual(try listing().filter { $0.contains("locus-tmp") }, [], "temporary files left behind")
        return (try parseSVG(out), try String(contentsOfFile: out, encoding: .utf8))
    }

    private func rows(_ svg: Node) -> [String: Node] {
        Dictionary(svg.find("g", class: "tensor").map { ($0.attributes["data-name"] ?? "?", $0) }, uniquingKeysWith: { a, _ in a })
    }

    private let awkward = "blocks.0/attn & <proj> \"q\" 'k'"

    func testMaskPlotHasOneBarPerTensorWithItsDensity() throws {
        let p = path("mask.h5")
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "a.weight", shape: [2, 4], bits: [true, false, true, false, false, false, true, false])   // 3/8
        try w.add(name: awkward, shape: [3], bits: [true, true, true])                                         // 3/3
        try w.add(name: "empty", shape: [0, 3], bits: [])
        try w.add(name: "z", shape: [6], bits: [false, false, false, false, false, false])                      // 0/6
        try w.finish()

        let (svg, text) = try plot(p)
        let r = rows(svg)
        XCTAssertEqual(Set(r.keys), ["a.weight", awkward, "empty", "z"])
        XCTAssertEqual(svg.find("g", class: "tensor").count, 4)
        XCTAssertEqual(svg.find("rect", class: "bar").count, 4, "one bar per tensor")
        XCTAssertTrue(text.contains("&amp; &lt;proj&gt; &quot;q&quot;"), "names are escaped")

        func percent(_ name: String) -> String? { r[name]?.find("text", class: "percent").first?.text }
        func count(_ name: String) -> String? { r[name]?.find("text", class: "count").first?.text }
        XCTAssertEqual(percent("a.weight"), "37.5%")
        XCTAssertEqual(count("a.weight"), "3/8")
        XCTAssertEqual(percent(awkward), "100.0%")
        XCTAssertEqual(percent("z"), "0.0%")
        XCTAssertEqual(percent("empty"), "empty")
        // The name is drawn (not truncated: it is short).
        XCTAssertTrue(r[awkward]!.find("text").contains { $0.text == awkward })

        // Bar lengths are proportional to density.
        func barWidth(_ name: String) throws -> Double { try XCTUnwrap(r[name]?.find("rect", class: "bar").first?.number("width")) }
        let full = try barWidth(awkward)
        XCTAssertGreaterThan(full, 200)
        XCTAssertEqual(try barWidth("a.weight"), full * 0.375, accuracy: 0.2)
        XCTAssertEqual(try barWidth("z"), 0)

        // The overall density line: 6 ones of 17 elements.
        let overall = try XCTUnwrap(svg.find("line", class: "overall").first)
        let x0 = try XCTUnwrap(r[awkward]?.find("rect", class: "bar").first?.number("x"))
        XCTAssertEqual(try XCTUnwrap(overall.number("x1")), x0 + full * 6 / 17, accuracy: 0.2)
        XCTAssertTrue(svg.find("text").contains { $0.text == "overall 35.3%" })
    }

    func testTaskVectorPlotShowsNonZeroDensity() throws {
        let p = path("tau.h5")
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint, scale: 0.5)
        try w.add(name: "dense", shape: [4], dense: [1, -2, 3, 4])                                  // 4/4
        try w.add(name: "sparse", shape: [2, 10], indices: [3, 17], values: [0.5, -0.25])          // 2/20
        try w.add(name: "zero", shape: [5], dense: [0, 0, 0, 0, 0])                                 // 0/5
        try w.finish()

        let (svg, _) = try plot(p)
        let r = rows(svg)
        XCTAssertEqual(Set(r.keys), ["dense", "sparse", "zero"])
        XCTAssertEqual(svg.find("rect", class: "bar").count, 3)
        XCTAssertEqual(r["dense"]?.find("text", class: "percent").first?.text, "100.0%")
        XCTAssertEqual(r["sparse"]?.find("text", class: "percent").first?.text, "10.0%")
        XCTAssertEqual(r["sparse"]?.find("text", class: "count").first?.text, "2/20")
        XCTAssertEqual(r["zero"]?.find("text", class: "percent").first?.text, "0.0%")
        XCTAssertTrue(svg.find("text").contains { $0.text == "overall 20.7%" }, "6 of 29")
    }

    func testScoresPlotHasHistogramAndOneBoxPerTensor() throws {
        let p = path("scores.h5")
        let a: [Float] = [0, 0, 1e-6, 1e-3, 0.5, 2, 0, 10]            // 3 zeros
        let b: [Float] = (1...100).map { Float($0) * 1e-4 }            // 1e-4 … 1e-2
        let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 64))
        try w.add(name: "a", shape: [2, 4], values: a)
        try w.add(name: awkward, shape: [100], values: b)
        try w.add(name: "empty", shape: [0], values: [])
        try w.add(name: "zeros", shape: [3], values: [0, 0, 0])
        try w.finish()

        // The histogram itself: exact counts, zeros apart, positive range from the smallest to the largest value.
        let report = try Inspector.inspect(p)
        let h = try ScoreHistogram.read(p, tensors: report.tensors.map(\.name), quantiles: report.tensors.map(\.quantiles))
        XCTAssertEqual(h.zeros, 6)
        XCTAssertEqual(h.counts.count, 40)
        XCTAssertEqual(h.counts.reduce(0, +), 105)
        XCTAssertEqual(h.total, 111)
        XCTAssertEqual(h.invalid, 0)
        XCTAssertEqual(try XCTUnwrap(h.minPositive), Double(Float(1e-6)))
        XCTAssertEqual(try XCTUnwrap(h.maxPositive), 10)
        XCTAssertEqual(h.counts.first, 1, "1e-6 alone in the first bin")
        XCTAssertEqual(h.counts.last, 1, "10 is in the last bin")

        let (svg, _) = try plot(p)
        let r = rows(svg)
        XCTAssertEqual(Set(r.keys), ["a", awkward, "empty", "zeros"])
        XCTAssertEqual(svg.find("rect", class: "bin").count, 41, "40 bins and the zero bar")
        XCTAssertEqual(svg.find("g", class: "zero").first?.find("rect", class: "bin").count, 1)
        XCTAssertEqual(svg.find("g", class: "box").count, 3, "no box for the empty tensor")
        XCTAssertNil(r["empty"]?.find("g", class: "box").first)
        XCTAssertEqual(r["empty"]?.find("text", class: "value").first?.text, "empty")
        XCTAssertTrue(r["a"]?.find("text", class: "value").first?.text.hasPrefix("median 5.0") ?? false)   // (1e-6 + 1e-3) / 2 ≈ 5.005e-4
        // Bin heights add up: the tallest bin reaches the top of its axis, all are non-negative.
        XCTAssertTrue(svg.find("rect", class: "bin").allSatisfy { ($0.number("height") ?? -1) >= 0 })
        XCTAssertTrue(svg.find("text").contains { $0.text.hasPrefix("111 values in 4 tensors: 6 zero (5.4%), 105 non-zero") })
    }

    func testScoresPlotOfOneTensorAndOfOnlyZeros() throws {
        let p = path("zeros.h5")
        let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
        try w.add(name: "zeros", shape: [4], values: [0, 0, 0, 0])
        try w.add(name: "one", shape: [1], values: [3])
        try w.finish()
        let (svg, _) = try plot(p, tensor: "zeros")
        XCTAssertEqual(Array(rows(svg).keys), ["zeros"])
        XCTAssertEqual(svg.find("rect", class: "bin").count, 1, "only the zero bar")
        XCTAssertTrue(svg.find("text").contains { $0.text == "no non-zero scores" })

        let (one, _) = try plot(p, tensor: "one")
        XCTAssertEqual(one.find("rect", class: "bin").count, 41)
        XCTAssertEqual(one.find("g", class: "box").count, 1)
    }

    func testStaleQuantilesDoNotLoseValues() throws {
        let p = path("stale.h5")
        let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
        try w.add(name: "t", shape: [3], values: [0.01, 1, 100])
        try w.finish()
        // Claim a narrower range than the values have.
        let f = try File.open(p, mode: .readWrite)
        try f.root.openGroup("tensors").openDataset("t").setAttribute("quantiles", [0.1, 0.2, 0.5, 0.7, 1.0])
        try f.close()
        let report = try Inspector.inspect(p)
        let h = try ScoreHistogram.read(p, tensors: ["t"], quantiles: report.tensors.map(\.quantiles))
        XCTAssertEqual(h.counts.reduce(0, +), 3)
        XCTAssertEqual(try XCTUnwrap(h.minPositive), Double(Float(0.01)))
        XCTAssertEqual(try XCTUnwrap(h.maxPositive), 100)
        XCTAssertEqual(h.counts.first, 1)
        XCTAssertEqual(h.counts.last, 1)
    }

    func testOtherKindsHaveNoPlotAndNothingIsWritten() throws {
        let p = path("c.h5")
        let w = try CheckpointWriter(path: p)
        try w.add(name: "w", values: [1, 2], shape: [2])
        _ = try w.finish()
        let before = try listing()
        let e = expectError(LocusError.self, mentioning: [p]) { _ = try InspectPlot.svg(try Inspector.inspect(p)) }
        XCTAssertTrue(e?.message.contains("no plot for kind checkpoint") ?? false, "\(String(describing: e))")
        XCTAssertEqual(try listing(), before)
    }

    func testWriteIsAtomic() throws {
        let out = path("plot.svg")
        try "old".write(toFile: out, atomically: false, encoding: .utf8)
        try InspectPlot.write("<svg/>", to: out)
        XCTAssertEqual(try String(contentsOfFile: out, encoding: .utf8), "<svg/>")
        expectError(LocusError.self, mentioning: [path("missing/plot.svg")]) { try InspectPlot.write("<svg/>", to: self.path("missing/plot.svg")) }
        XCTAssertEqual(try listing(), ["plot.svg"])
    }
}
