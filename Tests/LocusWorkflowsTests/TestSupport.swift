import Foundation
import LocusEngine
import LocusFormat
import LocusMerge
import LocusTestSupport
import XCTest

@testable import LocusWorkflows

class WorkflowTestCase: ScratchDirectoryTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        try BLAS.ensureLoaded()
    }

    /// Requires `body` to throw a LocusError whose one-line text contains every string of `mentioning`.
    @discardableResult
    func expectLocusError(_ mentioning: [String], file: StaticString = #filePath, line: UInt = #line,
                          _ body: () throws -> Void) -> LocusError? {
        LocusTestSupport.expectError(LocusError.self, mentioning: mentioning, file: file, line: line, body)
    }

    /// Requires `body` to throw a RequestError about `setting`.
    func expectRequestError(_ setting: String, _ mentioning: String, file: StaticString = #filePath, line: UInt = #line,
                            _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected a RequestError about \(setting)", file: file, line: line)
        } catch let e as RequestError {
            XCTAssertEqual(e.setting, setting, "\(e)", file: file, line: line)
            XCTAssertTrue(e.message.contains(mentioning), "'\(e)' does not mention '\(mentioning)'", file: file, line: line)
            XCTAssertFalse(e.message.contains("--"), "a library error names a command-line flag: \(e)", file: file, line: line)
        } catch {
            XCTFail("expected a RequestError, got \(type(of: error)): \(error)", file: file, line: line)
        }
    }
}

/// A linearly separable dataset: class c's samples cluster around a seeded random centre; the first
/// `train` samples are the train split, the rest val.
func separable(samples: Int, train: Int, features: Int, classes: Int, seed: UInt64) -> LabelledData {
    var rng = SplitMix64(seed: seed)
    let centres = (0..<classes).map { _ in (0..<features).map { _ in rng.uniform(-2, 2) } }
    var x: [Float] = [], y: [Int64] = []
    for i in 0..<samples {
        let c = i % classes
        y.append(Int64(c))
        x += centres[c].map { $0 + 0.6 * (rng.uniform(-1, 1)) }
    }
    return LabelledData(inputs: .float32(x), shape: [samples, features], labels: y, classes: (0..<classes).map { "c\($0)" },
                        splits: ["train": Array(0..<train), "val": Array(train..<samples)])
}

/// Two tasks on one small MLP, made with the workflows themselves: a base trained on task A with
/// head `a`, a linear-probed head `b` for task B, and one sparse task vector per task (random
/// masks of density 0.5, SparseSGDM) carrying task-head and task-accuracy.
struct TwoTasks {
    let base: String, dataA: String, dataB: String, tauA: String, tauB: String

    static func make(in dir: String) throws -> TwoTasks {
        func p(_ n: String) -> String { dir + "/" + n }
        try DatasetArtifact.write(separable(samples: 90, train: 60, features: 5, classes: 3, seed: 11), to: p("a.h5"))
        try DatasetArtifact.write(separable(samples: 90, train: 60, features: 5, classes: 3, seed: 12), to: p("b.h5"))
        try Model(.mlp(input: [5], hidden: [12], classes: 3, head: "a"), seed: 3).save(p("init.h5"))
        var pre = TrainRequest(model: p("init.h5"), data: p("a.h5"), output: p("pre.h5"))
        pre.head = "a"; pre.run.config.epochs = 15; pre.run.config.learningRate = 0.02; pre.run.config.deterministic = true
        _ = try pre.execute()
        var probe = TrainRequest(model: p("pre.h5"), data: p("b.h5"), output: p("base.h5"))
        probe.head = "b"; probe.addHead = true; probe.linearProbe = true
        probe.run.config.epochs = 10; probe.run.config.learningRate = 0.02; probe.run.config.deterministic = true
        _ = try probe.execute()
        for (task, seed) in [("a", UInt64(1)), ("b", UInt64(2))] {
            var m = MaskRequest(model: p("base.h5"), output: p("mask-\(task).h5"), density: 0.5)
            m.method = .random; m.set.seed = seed
            _ = try m.execute()
            var f = FinetuneRequest(base: p("base.h5"), data: p("\(task).h5"), mask: p("mask-\(task).h5"), output: p("ft-\(task).h5"))
            f.taskVector = p("tau-\(task).h5"); f.head = task
            f.run.config.epochs = 15; f.run.config.learningRate = 0.05; f.run.config.optimizer = .sgd; f.run.config.deterministic = true
            _ = try f.execute()
        }
        return TwoTasks(base: p("base.h5"), dataA: p("a.h5"), dataB: p("b.h5"), tauA: p("tau-a.h5"), tauB: p("tau-b.h5"))
    }
}

/// Accuracy of the checkpoint at `path` on `split`, evaluated from the file alone.
func accuracy(of path: String, data: String, head: String, split: String = "val") throws -> Double {
    let task = try TaskData(model: path, data: data)
    return try Training.evaluate(task.model, head: head, on: try task.batches(head: head, split: split)).accuracy
}
