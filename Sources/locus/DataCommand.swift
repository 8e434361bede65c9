import ArgumentParser
import LocusData
import LocusFormat

extension DataFormat: ExpressibleByArgument {}
extension CSVImporter.Header: ExpressibleByArgument {}

/// `locus data import | derive`: real data files → dataset artifacts (spec §6), and new tasks from them.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Turn data files (IDX, CSV, h5py) into dataset artifacts and derive new tasks from them.",
        discussion: """
        A dataset artifact (spec/FORMAT.md §6) holds the inputs (uint8 or float32,
        [N, F] features or [N, C, H, W] images), int64 labels, class names,
        train/val/test index splits and the normalisation the engine applies:
        (raw · scale − mean) / std per channel, mean and std measured on the train
        split. `locus inspect` shows one; `locus validate` checks it.

        Examples:
          locus data import fixtures/data/digits.csv.gz --image-shape 1,8,8 \\
              -o digits.h5
          locus data import train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \\
              t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz -o fashion.h5
          locus data derive digits.h5 --classes 3,5,7 --transform resize=28,28 \\
              -o digits357-28.h5
        """,
        subcommands: [ImportData.self, DeriveData.self])
}

extension DataCommand {
    struct ImportData: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Import IDX, CSV(.gz) or h5py dataset files as a dataset artifact.",
            discussion: """
            The format comes from the first file name (.csv/.csv.gz, .h5/.hdf5,
            *idx* or *-ubyte(.gz)); --format overrides it. Gzip is detected.
              idx  IMAGES LABELS [TEST-IMAGES TEST-LABELS]; a test pair is kept
                   as the test split, val = --val-fraction of the training pair.
              csv  one sample per row, the label in the last column (or
                   --label-column); --image-shape C,H,W makes rows images.
              h5   a dataset artifact (e.g. from h5py): checked and re-written.
            Splits are deterministic (--split fractions, --seed) and stratified
            by class unless --no-stratify. Scale is 1/255 for uint8 and 1 for
            float32 unless --scale; mean and std come from the train split.
            All the rules: docs/data.md.

            Examples:
              locus data import fixtures/data/digits.csv.gz --image-shape 1,8,8 \\
                  -o digits.h5
              locus data import fixtures/data/mnist_5k.csv.gz \\
                  --image-shape 1,28,28 --split 0.7,0.15,0.15 --seed 1 -o mnist5k.h5
              locus data import iris.csv --label-column species -o iris.h5
              F=/usr/share/datasets/fashion-mnist
              locus data import $F/train-images-idx3-ubyte.gz \\
                  $F/train-labels-idx1-ubyte.gz $F/t10k-images-idx3-ubyte.gz \\
                  $F/t10k-labels-idx1-ubyte.gz -o fashion.h5 --class-names \\
                  "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
              locus data import from-h5py.h5 --split 0.8,0.2 -o resplit.h5
            """)

        @Argument(help: "Source files: IMAGES LABELS [TEST-IMAGES TEST-LABELS] (idx), one CSV, or one .h5.") var sources: [String]
        @Option(name: .shortAndLong, help: "Output dataset artifact (.h5; written atomically).") var output: String
        @Option(help: "Source format (default: from the first file name).") var format: DataFormat?
        @Option(help: "CSV: is the first row a header?") var header: CSVImporter.Header = .auto
        @Option(parsing: .unconditional,
                help: ArgumentHelp("CSV: the label column: 0-based index, -1 for the last, or a header name.", valueName: "column"))
        var labelColumn: String?
        @Option(help: ArgumentHelp("CSV: reshape each row's features into images, e.g. 1,8,8.", valueName: "C,H,W")) var imageShape: String?
        @Option(help: "CSV: field separator: one character, or 'tab'.") var delimiter: String = ","
        @Option(help: ArgumentHelp("Class names, comma-separated, in label order.", valueName: "names")) var classNames: String?
        @Option(help: ArgumentHelp("Re-split every sample: train,val,test (or train,test) fractions adding up to 1.",
                                   valueName: "fractions")) var split: String?
        @Option(help: "Seed of the split (SplitMix64: the same split on every machine).") var seed: UInt64 = 0
        @Flag(help: "Split without stratifying by class.") var noStratify = false
        @Option(help: "idx with a test pair: fraction of the training pair moved to 'val' (0 for no val split).") var valFraction: Double = 0.1
        @Option(help: ArgumentHelp("The 'scale' attribute, a number or 1/K (default 1/255 for uint8, 1 for float32, the source's for h5).",
                                   valueName: "scale")) var scale: String?
        @Option(help: "Refuse a file larger than this many bytes once decompressed.") var maxBytes: Int = GzipReader.defaultLimit
        @Flag(help: "Print nothing on success.") var quiet = false
        @OptionGroup var verification: VerifyOptions

        func validate() throws {
            _ = try options()
        }

        /// The import options, every flag value parsed and checked (usage errors name the flag).
        func options() throws -> DataImport.Options {
            var o = DataImport.Options()
            o.format = format
            o.csv.header = header
            if let labelColumn { o.csv.labelColumn = .init(parsing: labelColumn) }
            if let imageShape { o.csv.imageShape = try parseSizes(imageShape, option: "--image-shape", count: 3) }
            o.csv.delimiter = try parseDelimiter(delimiter)
            if let classNames { o.classNames = classNames.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            if let split { o.split = try parseSplit(split) }
            o.seed = seed
            o.stratified = !noStratify
            o.valFraction = valFraction
            if let scale { o.scale = try parseScale(scale) }
            guard maxBytes > 0 else { throw ValidationError("--max-bytes must be > 0, got \(maxBytes)") }
            o.limit = maxBytes
            return o
        }

        func run() throws {
            try verification.scoped {
                try protectInputs()
                let o = try options()
                let r = try DataImport.importFiles(sources, to: output, options: o,
                                                   command: ["locus"] + Array(CommandLine.arguments.dropFirst()))
                if !quiet { StandardStream.output.write(summary(output, r.data) + "\n") }
            }
        }
    }

    struct DeriveData: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "derive",
            abstract: "Derive a new task from a dataset artifact: a class subset and/or input transforms.",
            usage: "locus data derive <source> -o <output> [--classes <names>] [--transform <t> ...] [<options>]",
            discussion: """
            --classes keeps the samples of the listed classes (names, or 0-based
            class indices when no class has that name) and relabels them 0, 1, …
            in the order listed, keeping their names. Splits keep their remaining
            samples (or --split re-splits). Each --transform applies to every
            image, in the order given:

              rotate90[=K]     K quarter turns counter-clockwise (K < 0: clockwise),
                               numpy.rot90(x, K, axes=(2, 3))
              flip-horizontal  mirror left–right, numpy.flip(x, axis=3)
              invert           x → 1/scale − x: 255 − x for uint8 with scale 1/255,
                               1 − x for float data with scale 1
              resize=H,W       bilinear with half-pixel centres, as torch's
                               interpolate(x, size=(H, W), mode="bilinear",
                               align_corners=False): source row
                               s = max(0, (i + 0.5)·H_in/H − 0.5) mixes rows
                               floor(s) and min(floor(s) + 1, H_in − 1) with
                               weights 1 − frac(s) and frac(s); columns likewise.
                               The result is float32 and keeps the scale.

            Mean and std are re-measured on the new train split. Provenance records
            the source, the classes and the transforms. The output is written
            atomically.

            Examples:
              locus data derive digits.h5 --classes 3,5,7 -o digits-357.h5
              locus data derive digits.h5 --transform resize=28,28 -o digits-28.h5
              locus data derive mnist5k.h5 --transform rotate90 --transform invert \\
                  -o mnist5k-rot-inv.h5
              locus data derive fashion.h5 --classes "Sandal,Sneaker,Ankle boot" \\
                  --split 0.8,0.1,0.1 --seed 3 -o shoes.h5
            """)

        @Argument(help: "Source dataset artifact.") var source: String
        @Option(name: .shortAndLong, help: "Output dataset artifact (written atomically).") var output: String
        @Option(help: ArgumentHelp("Keep these classes, relabelled 0, 1, … in this order.", valueName: "names")) var classes: String?
        @Option(name: .customLong("transform"), help: ArgumentHelp("rotate90[=K] | flip-horizontal | invert | resize=H,W (repeatable, applied in order).",
                                                                    valueName: "transform")) var transforms: [String] = []
        @Option(help: ArgumentHelp("Re-split: train,val,test (or train,test) fractions adding up to 1.", valueName: "fractions")) var split: String?
        @Option(help: "Seed of --split.") var seed: UInt64 = 0
        @Flag(help: "Split without stratifying by class.") var noStratify = false
        @Flag(help: "Print nothing on success.") var quiet = false
        @OptionGroup var verification: VerifyOptions

        func validate() throws {
            _ = try parsedTransforms()
            if let split { _ = try parseSplit(split) }
            guard classes != nil || !transforms.isEmpty || split != nil else {
                throw ValidationError("nothing to derive from \(source): give --classes, --transform or --split")
            }
        }

        func parsedTransforms() throws -> [InputTransform] {
            try transforms.map { text in
                do { return try InputTransform(parsing: text) } catch { throw ValidationError("--transform \(error)") }
            }
        }

        func run() throws {
            try verification.scoped {
                try protectInputs()
                let t = try parsedTransforms()
                let c = classes.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
                let s = try split.map(parseSplit)
                let d = try DataImport.deriveFile(source, to: output, classes: c, transforms: t, split: s, seed: seed,
                                                  stratified: !noStratify, command: ["locus"] + Array(CommandLine.arguments.dropFirst()))
                if !quiet { StandardStream.output.write(summary(output, d) + "\n") }
            }
        }
    }
}

private func summary(_ path: String, _ d: LabelledData) -> String {
    let dtype: String
    switch d.inputs { case .uint8: dtype = "uint8"; case .float32: dtype = "float32" }
    let splits = ["train", "val", "test"].compactMap { k in d.splits[k].map { "\(k) \($0.count)" } }
        + d.splits.keys.filter { !["train", "val", "test"].contains($0) }.sorted().map { "\($0) \(d.splits[$0]!.count)" }
    return "\(path): \(d.sampleCount) samples of \(dtype) \(Array(d.shape.dropFirst())), \(d.classes.count) classes, splits: "
        + (splits.isEmpty ? "none" : splits.joined(separator: ", "))
}

private func parseSizes(_ text: String, option: String, count: Int) throws -> [Int] {
    let v = text.split(separator: ",", omittingEmptySubsequences: false).map { Int(String($0.filter { $0 != " " })) }
    guard v.count == count, v.allSatisfy({ ($0 ?? 0) > 0 }) else {
        throw ValidationError("\(option) '\(text)' is not \(count) positive comma-separated sizes, e.g. 1,28,28")
    }
    return v.map { $0! }
}

private func parseDelimiter(_ text: String) throws -> UInt8 {
    if text == "tab" || text == "\\t" || text == "\t" { return 0x09 }
    let u = Array(text.utf8)
    guard u.count == 1, u[0] != 0x22, u[0] != 0x0A, u[0] != 0x0D else {
        throw ValidationError("--delimiter '\(text)' must be a single ASCII character other than a quote or a line break, or 'tab'")
    }
    return u[0]
}

private func parseScale(_ text: String) throws -> Double {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    let v: Double?
    if parts.count == 2, let a = Double(parts[0]), let b = Double(parts[1]) { v = a / b } else { v = Double(text) }
    guard let v, v > 0, v.isFinite else { throw ValidationError("--scale '\(text)' must be a number > 0 such as 0.0625 or 1/16") }
    return v
}

/// `--split` fractions; a bad specification is a usage error naming the flag.
private func parseSplit(_ text: String) throws -> SplitFractions {
    do { return try SplitFractions(parsing: text) } catch { throw ValidationError("--split \(error)") }
}
