import LocusFormat

/// The kinds of source files `DataImport` reads.
public enum DataFormat: String, Sendable, CaseIterable {
    /// IDX arrays (MNIST, Fashion-MNIST, …): images file + labels file, optionally a test pair.
    case idx
    /// CSV or CSV.gz: one sample per row, a label column, numeric features.
    case csv
    /// A Locus dataset artifact (e.g. written by h5py following spec §6).
    case h5

    /// From the file name: `.csv`/`.csv.gz`/`.tsv` → csv, `.h5`/`.hdf5` → h5, names containing
    /// `idx` or ending in `-ubyte`/`-ubyte.gz` → idx. Nil when the name says nothing.
    public static func infer(from path: String) -> DataFormat? {
        var name = Substring(path.split(separator: "/").last ?? "").lowercased()
        if name.hasSuffix(".gz") { name = String(name.dropLast(3)) }
        if name.hasSuffix(".csv") || name.hasSuffix(".tsv") { return .csv }
        if name.hasSuffix(".h5") || name.hasSuffix(".hdf5") { return .h5 }
        if name.contains("idx") || name.hasSuffix("-ubyte") || name.hasSuffix(".idx") { return .idx }
        return nil
    }
}

/// Source files → a split, normalised dataset artifact (spec §6).
public enum DataImport {
    public static let defaultSplit = try! SplitFractions(parsing: "0.8,0.1,0.1")
    /// Most classes a dataset may have (what `DatasetArtifact.read` accepts in `/classes`).
    public static let maxClasses = 1 << 20

    /// Reads `sources`, splits and normalises. IDX sources are positional: images, labels
    /// [, test images, test labels]. CSV and h5 take one file.
    public static func load(_ sources: [String], options: Options = .init()) throws -> Imported {
        guard let first = sources.first else { throw LocusError(file: "locus data import", "no source file given") }
        guard let format = options.format ?? DataFormat.infer(from: first) else {
            throw RemediableError(LocusError(file: first, "cannot tell the format (idx, csv or h5) from the file name"), .name(setting: "format"))
        }
        if let s = options.scale, !(s > 0 && s.isFinite) { throw RequestError("scale", "\(s) must be a finite number > 0") }
        guard options.valFraction >= 0, options.valFraction < 1 else {
            throw RequestError("valFraction", "\(options.valFraction) must be in [0, 1)")
        }
        if let names = options.classNames {
            guard !names.isEmpty, Set(names).count == names.count, !names.contains("") else {
                throw RequestError("classNames", "must be distinct non-empty names")
            }
        }
        var parameters: [String: JSONValue] = ["format": .string(format.rawValue), "seed": .integer(Int64(bitPattern: options.seed)),
                                               "stratified": .bool(options.stratified)]
        var data: LabelledData
        var given: [String: [Int]]? = nil         // splits that come with the sources
        var inputs: [Provenance.Input]
        switch format {
        case .idx:
            guard sources.count == 2 || sources.count == 4 else {
                throw LocusError(file: first, "IDX import takes 2 files (images labels) or 4 (train images, train labels, test images, test labels), got \(sources.count)")
            }
            let roles = ["images", "labels", "test-images", "test-labels"]
            inputs = zip(roles, sources).map { Provenance.Input(role: $0, path: $1, fingerprint: nil) }
            let train = try idxPair(sources[0], sources[1], limit: options.limit)
            if sources.count == 4 {
                let test = try idxPair(sources[2], sources[3], limit: options.limit)
                guard Array(train.shape.dropFirst()) == Array(test.shape.dropFirst()) else {
                    throw LocusError(file: sources[2], "test samples have shape \(Array(test.shape.dropFirst())), the training samples \(Array(train.shape.dropFirst())) (\(sources[0]))")
                }
                let nTrain = train.shape[0], nTest = test.shape[0]
                let merged: LabelledData.Inputs
                switch (train.inputs, test.inputs) {
                case (.uint8(let a), .uint8(let b)): merged = .uint8(a + b)
                default: merged = .float32(floats(train.inputs) + floats(test.inputs))
                }
                data = LabelledData(inputs: merged, shape: [nTrain + nTest] + train.shape.dropFirst(), labels: train.labels + test.labels,
                                    classes: [], splits: [:])
                given = ["train": Array(0..<nTrain), "test": Array(nTrain..<(nTrain + nTest))]
            } else {
                data = LabelledData(inputs: train.inputs, shape: train.shape, labels: train.labels, classes: [], splits: [:])
            }
            let top = Int(data.labels.max() ?? -1)
            let nTrain = given?["train"]?.count ?? data.sampleCount
            func culprit() -> (file: String, item: Int) {
                let i = data.labels.firstIndex(of: Int64(top)) ?? 0
                return i >= nTrain ? (sources[3], i - nTrain) : (sources[1], i)
            }
            if top >= maxClasses, options.classNames == nil {
                let (file, item) = culprit()
                throw LocusError(file: file, object: "IDX data", "label \(top) of item \(item) is too large for a class index (at most \(maxClasses - 1))")
            }
            if let names = options.classNames {
                guard top < names.count else {
                    let (file, item) = culprit()
                    throw LocusError(file: file, object: "IDX data", "label \(top) of item \(item) is outside [0, \(names.count)) for the \(names.count) class names given")
                }
                data.classes = names
            } else {
                data.classes = (0...max(0, top)).map(String.init)
            }
        case .csv:
            guard sources.count == 1 else { throw LocusError(file: first, "CSV import takes one file, got \(sources.count)") }
            inputs = [Provenance.Input(role: "csv", path: first, fingerprint: nil)]
            var o = options.csv
            o.classNames = options.classNames
            o.limit = options.limit
            let (d, report) = try CSVImporter.read(first, options: o)
            data = d
            parameters["header"] = .bool(report.hadHeader)
            parameters["label-column"] = .integer(Int64(report.labelColumn))
            if let name = report.labelColumnName { parameters["label-column-name"] = .string(name) }
            if let s = o.imageShape { parameters["image-shape"] = .array(s.map { .integer(Int64($0)) }) }
        case .h5:
            guard sources.count == 1 else { throw LocusError(file: first, "h5 import takes one dataset artifact, got \(sources.count)") }
            inputs = [Provenance.Input(role: "dataset", path: first, fingerprint: nil)]
            data = try DatasetArtifact.read(first)
            if let names = options.classNames {
                guard names.count == data.classes.count else {
                    throw LocusError(file: first, object: "/classes", "has \(data.classes.count) classes, the class names given are \(names.count)")
                }
                data.classes = names
            }
            if !data.splits.isEmpty { given = data.splits }
        }
        if let names = options.classNames { parameters["class-names"] = .array(names.map { .string($0) }) }

        // Splits.
        if let split = options.split {
            data.splits = Splits.make(labels: data.labels, fractions: split, seed: options.seed, stratified: options.stratified)
            parameters["split"] = .string(split.description)
        } else if format == .idx, let given {
            let train = given["train"]!
            if options.valFraction > 0 {
                let f = try SplitFractions([("train", 1 - options.valFraction), ("val", options.valFraction)])
                data.splits = Splits.make(labels: data.labels, among: train, fractions: f, seed: options.seed, stratified: options.stratified)
            } else {
                data.splits = ["train": train]
            }
            data.splits["test"] = given["test"]!
            parameters["split"] = .string("given test set; val-fraction=\(options.valFraction) of the training set")
            parameters["val-fraction"] = .number(options.valFraction)
        } else if let given {
            data.splits = given
            parameters["split"] = .string("kept from the source")
        } else {
            data.splits = Splits.make(labels: data.labels, fractions: defaultSplit, seed: options.seed, stratified: options.stratified)
            parameters["split"] = .string(defaultSplit.description)
        }

        // Normalisation on the training split.
        let scale = options.scale ?? (format == .h5 ? data.normalization.scale : NormalizationStats.defaultScale(for: data.inputs))
        data.normalization = NormalizationStats.compute(data, scale: scale, samples: NormalizationStats.trainingSamples(data))
        parameters["scale"] = .number(scale)
        try data.check(file: first)
        let names = sources.map { String($0.split(separator: "/").last ?? Substring($0)) }
        return Imported(data: data, format: format, source: ([format.rawValue] + names).joined(separator: " "),
                        inputs: inputs, parameters: parameters)
    }

    /// `load`, then writes the artifact atomically to `output`.
    @discardableResult
    public static func importFiles(_ sources: [String], to output: String, options: Options = .init(),
                                   command: [String] = CommandLine.arguments) throws -> Imported {
        let r = try load(sources, options: options)
        if r.format != .h5, sources.contains(output) {
            throw LocusError(file: output, "is also a source file; choose another output path")
        }
        try DatasetArtifact.write(r.data, to: output, attributes: ["source": r.source],
                                  provenance: Provenance(command: command, inputs: r.inputs, parameters: r.parameters))
        return r
    }

    /// Reads the dataset artifact `source`, derives a new task from it (`Derive.derive`; re-split
    /// first when `split` is given) and writes it atomically to `output`.
    @discardableResult
    public static func deriveFile(_ source: String, to output: String, classes: [String]? = nil, transforms: [InputTransform],
                                  split: SplitFractions? = nil, seed: UInt64 = 0, stratified: Bool = true,
                                  command: [String] = CommandLine.arguments) throws -> LabelledData {
        var d = try DatasetArtifact.read(source)
        if let split { d.splits = Splits.make(labels: d.labels, fractions: split, seed: seed, stratified: stratified) }
        let out = try Derive.derive(d, classes: classes, transforms: transforms, file: source)
        var parameters: [String: JSONValue] = ["transforms": .array(transforms.map { .string($0.description) })]
        if let classes { parameters["classes"] = .array(classes.map { .string($0) }) }
        if let split {
            parameters["split"] = .string(split.description)
            parameters["seed"] = .integer(Int64(bitPattern: seed)); parameters["stratified"] = .bool(stratified)
        }
        let name = String(source.split(separator: "/").last ?? Substring(source))
        let what = ([classes.map { "classes=" + $0.joined(separator: ",") }].compactMap { $0 } + transforms.map(\.description)).joined(separator: " ")
        try DatasetArtifact.write(out, to: output, attributes: ["source": "derived \(name)" + (what.isEmpty ? "" : " " + what)],
                                  provenance: Provenance(command: command, inputs: [.init(role: "source", path: source, fingerprint: nil)],
                                                         parameters: parameters))
        return out
    }

    static func floats(_ i: LabelledData.Inputs) -> [Float] {
        switch i {
        case .uint8(let a): return a.map { Float($0) }
        case .float32(let a): return a
        }
    }

    /// One IDX images file + labels file, checked against each other.
    static func idxPair(_ imagesPath: String, _ labelsPath: String, limit: Int) throws -> (inputs: LabelledData.Inputs, shape: [Int], labels: [Int64]) {
        let images = try IDX.read(imagesPath, limit: limit)
        let labelsArray = try IDX.read(labelsPath, limit: limit)
        if images.dims.count == 1, labelsArray.dims.count >= 2 {
            throw LocusError(file: imagesPath, "holds 1-D labels and \(labelsPath) holds images: pass the images file first, then the labels file")
        }
        let (inputs, shape) = try IDX.inputs(images, file: imagesPath)
        let labels = try IDX.labels(labelsArray, file: labelsPath)
        guard shape[0] > 0 else { throw LocusError(file: imagesPath, object: "IDX header", "holds no samples (dimensions \(images.dims))") }
        guard labels.count == shape[0] else {
            throw LocusError(file: labelsPath, "has \(labels.count) labels but \(imagesPath) has \(shape[0]) images; they must pair one to one")
        }
        return (inputs, shape, labels)
    }
}

extension DataImport {
    /// Everything `DataImport.load` can be told.
    public struct Options: Sendable {
        /// Source format; inferred from the first file name when nil.
        public var format: DataFormat? = nil
        /// CSV reading (header, label column, image shape, delimiter).
        public var csv = CSVImporter.Options()
        /// Class names (CSV: see `CSVImporter`; IDX: one per label value, at least max label + 1;
        /// h5: replaces the stored names, same count).
        public var classNames: [String]? = nil
        /// Re-split every sample with these fractions. When nil: IDX with a test pair keeps it as
        /// `test` and carves `val` out of the training pair (`valFraction`); an h5 source keeps its
        /// splits; anything else gets train/val/test = 0.8/0.1/0.1.
        public var split: SplitFractions? = nil
        public var seed: UInt64 = 0
        /// Split each class separately so every split has the class proportions of the whole.
        public var stratified = true
        /// Fraction of the given training samples moved to `val` when a test set is given (0: no val).
        public var valFraction = 0.1
        /// `scale` attribute; default 1/255 for uint8, 1 for float32, the source's own for h5.
        public var scale: Double? = nil
        /// Cap on each file's (decompressed) size.
        public var limit = GzipReader.defaultLimit
        public init() {}
    }

    /// Result of an import: the data (split and normalised) and how it was made.
    public struct Imported: Sendable {
        public var data: LabelledData
        public var format: DataFormat
        /// Root attribute `source`: the format and the file names.
        public var source: String
        public var inputs: [Provenance.Input]
        public var parameters: [String: JSONValue]
    }
}
