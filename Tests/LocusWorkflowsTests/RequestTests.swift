import Foundation
import LocusEngine
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusWorkflows

/// The command requests on a tiny MLP: init, train, eval (with logits), score (with append), and
/// what they refuse.
final class RequestTests: WorkflowTestCase {
    func testInitTrainEvalScore() throws {
        let data = path("d.h5")
        try DatasetArtifact.write(separable(samples: 60, train: 40, features: 5, classes: 3, seed: 4), to: data)
        var i = InitRequest(output: path("m.h5"))
        expectRequestError("input", "input shape") { _ = try i.execute() }
        i.data = data; i.hidden = [7]; i.head = "t"
        let made = try i.execute()
        XCTAssertEqual(made.parameters, 5 * 7 + 7 + 7 * 3 + 3)
        XCTAssertEqual(made.heads, ["t"])
        XCTAssertEqual(try Model.load(path("m.h5")).architecture, .mlp(input: [5], hidden: [7], classes: 3, head: "t", classNames: ["c0", "c1", "c2"]))

        var t = TrainRequest(model: path("m.h5"), data: data, output: path("m.h5"))
        t.head = "t"; t.run.config.epochs = 5; t.run.config.learningRate = 0.02; t.run.config.deterministic = true
        let trained = try t.execute()
        XCTAssertEqual(trained.validationSplit, "val")
        XCTAssertEqual(trained.reports.count, 5)

        var e = EvalRequest(model: path("m.h5"), data: data)
        e.split = "val"; e.collectLogits = true
        let ev = try e.execute()
        XCTAssertEqual(ev.results.map(\.head), ["t"])
        XCTAssertEqual(ev.results[0].accuracy, trained.reports.last!.validationAccuracy)
        XCTAssertEqual(ev.logits?.shape, [20, 3])
        // The logits are the model's own forward pass, argmax giving the reported accuracy.
        let task = try TaskData(model: path("m.h5"), data: data)
        let labels = try task.batches(head: "t", split: "val").indices.map { task.data.labels[$0] }
        let logits = ev.logits!.values
        let hits = (0..<20).filter { r in
            let row = Array(logits[(r * 3)..<(r * 3 + 3)])
            return Int64(row.firstIndex(of: row.max()!)!) == labels[r]
        }.count
        XCTAssertEqual(Double(hits) / 20, ev.results[0].accuracy)
        var two = EvalRequest(model: path("m.h5"), data: data)
        two.head = ["t", "t"]; two.collectLogits = true
        do {
            _ = try two.execute()
            XCTFail("two heads' logits were collected")
        } catch let e as RemediableError {
            XCTAssertEqual(e.remedy, .name(setting: "head"))
            XCTAssertTrue(e.error.message.contains("exactly one head"), "\(e)")
        }

        // score, then --append: the sums add up to one run over both halves.
        var s = ScoreRequest(model: path("m.h5"), data: data, output: path("s1.h5"))
        s.set.head = "t"; s.set.estimator = .fisherEmpirical; s.set.batchSize = 10; s.set.batches = 2
        XCTAssertEqual(try s.execute().samples, 20)
        s.append = true
        let appended = try s.execute()
        XCTAssertEqual(appended.samples, 40)
        var once = s
        once.append = false; once.output = path("s2.h5"); once.set.batches = 2
        _ = try once.execute()
        let a = try ScoresReader(path: path("s1.h5")), b = try ScoresReader(path: path("s2.h5"))
        XCTAssertEqual(a.tensors.map(\.name), b.tensors.map(\.name))
        for (x, y) in zip(a.tensors, b.tensors) {
            let twice = try a.read(x), one = try b.read(y)
            for (u, v) in zip(twice, one) { XCTAssertEqual(Double(u), 2 * Double(v), accuracy: 1e-5 * max(1, abs(Double(u))), x.name) }
        }
        s.set.exclude = "("
        expectRequestError("exclude", "regular expression") { _ = try s.execute() }
    }
}
