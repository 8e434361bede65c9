import LocusFormat

// Each command names the files it reads and writes; `OutputSafety.check` refuses, before anything
// is written, an output that is one of the inputs (through links or other spellings) or two
// outputs that are one file. Rewriting in place is allowed only where the command documents it.

extension ConvertCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)],
                               inputs: [.init("input", input)] + optional("base", base) + optional("architecture", architecture))
    }
}

extension DataCommand.ImportData {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: sources.enumerated().map { .init("source \($0.offset + 1)", $0.element) })
    }
}

extension DataCommand.DeriveData {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: [.init("source dataset", source)])
    }
}

extension InitCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: optional("architecture file", config) + optional("dataset", data) + optional("text embeddings", textEmbeddings))
    }
}

extension TrainCommand {
    /// `train MODEL DATA -o MODEL` rewrites the checkpoint in place (atomically, mode kept).
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output, rewritesInput: "model")], inputs: [.init("model", model), .init("dataset", data)])
    }
}

extension EvalCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: optional("logits file", logits), inputs: [.init("model", model), .init("dataset", data)])
    }
}

extension ScoreCommand {
    /// With --append the output is read and rewritten on purpose.
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: [.init("model", model), .init("dataset", data)])
    }
}

extension MaskCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)],
                               inputs: [.init("model", model)] + optional("dataset", data) + optional("scores", fromScores) + optional("task vector", fromTaskVector))
    }
}

extension FinetuneCommand {
    /// Without --task-vector, `finetune BASE DATA -o BASE` may rewrite the base in place; with it,
    /// the base must survive to be diffed against.
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output, rewritesInput: taskVector == nil ? "base" : nil)] + optional("task vector", taskVector),
                               inputs: [.init("base", base), .init("dataset", data), .init("mask", mask)])
    }
}

extension DiffCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: [.init("base", base), .init("fine-tuned checkpoint", finetuned)])
    }
}

extension ApplyCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)], inputs: [.init("base", base), .init("task vector", taskVector)])
    }
}

extension MergeCommand {
    func protectInputs(base: String?, inputs given: [String], role: String, scores: [String]) throws {
        var inputs: [OutputSafety.Input] = optional("base", base) + optional("recipe", config)
        inputs += given.enumerated().map { .init("\(role) \($0.offset + 1)", $0.element) }
        inputs += scores.enumerated().map { .init("scores file \($0.offset + 1)", $0.element) }
        try OutputSafety.check(outputs: [.init("output", output)] + alpha.outputs, inputs: inputs + alpha.inputs)
    }
}

private func optional(_ role: String, _ path: String?) -> [OutputSafety.Input] { path.map { [.init(role, $0)] } ?? [] }
private func optional(_ role: String, _ path: String?) -> [OutputSafety.Output] { path.map { [.init(role, $0)] } ?? [] }

extension CompareCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: optional("heatmap", svg), inputs: files.enumerated().map { .init("file \($0.offset + 1)", $0.element) })
    }
}

extension NegateCommand {
    func protectInputs() throws {
        try OutputSafety.check(outputs: [.init("output", output)] + optional("α table", alphaJson) + optional("plot", plot),
                               inputs: [.init("base", base), .init("task vector", taskVector), .init("task dataset", eval), .init("control dataset", control)])
    }
}
