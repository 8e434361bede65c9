import Foundation
import LocusFormat
import LocusEngine

/// A model and a dataset artifact opened together: what `train`, `finetune`, `eval`, `score`,
/// `mask` and the α search start from. Errors name the file they come from.
public struct TaskData {
    public let model: Model
    public let modelPath: String
    public let data: LabelledData
    public let dataPath: String

    /// Loads the checkpoint (any source `openCheckpoint` reads, checked against its
    /// /architecture) and reads the dataset artifact.
    public init(model: String, data: String) throws {
        self.init(model: try Model.load(model), modelPath: model, data: try DatasetArtifact.read(data), dataPath: data)
    }

    public init(model: Model, modelPath: String, data: LabelledData, dataPath: String) {
        self.model = model; self.modelPath = modelPath; self.data = data; self.dataPath = dataPath
    }

    /// The head named `name`; an error about the model's file when it has none.
    public func head(_ name: String) throws -> any ClassifierHead {
        try engine(file: modelPath) { try model.head(name) }
    }

    /// The samples of `split` (nil: every sample), shaped for the model and checked against the
    /// head's class count.
    public func batches(head: String, split: String?) throws -> Batches {
        try Batches(data, split: split, inputShape: model.architecture.input, classes: try self.head(head).outFeatures, file: dataPath)
    }

    /// The validation split to use: the one asked for, else `val` when the data has one, else
    /// none (empty).
    public func validationSplit(_ requested: String?) -> String {
        requested ?? (data.splits["val"] != nil ? "val" : "")
    }

    /// Training and (unless the validation split is empty) validation batches for `head`.
    public func trainingSets(head: String, split: String, validation: String) throws -> (train: Batches, validation: Batches?) {
        let train = try batches(head: head, split: split)
        return (train, validation.isEmpty ? nil : try batches(head: head, split: validation))
    }
}
