import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// Merge configs (docs/merging.md §Configs): parsing mergekit's YAML (keys refused or unknown, with
/// their names), per-tensor parameter values (filters: first substring match wins; gradients:
/// mergekit's interpolation across the layer index), include/exclude globs, and merges through the
/// driver with fine-tuned checkpoints and task vectors as inputs.
final class MergeConfigTests: ScratchDirectoryTestCase {
    private func parse(_ yaml: String) throws -> MergeConfig { try MergeConfig.parse(yaml, path: path("c.yml")) }

    private func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch let e as LocusError { return e.description } catch { return "\(error)" }
    }

    // MARK: - parsing

    func testMergekitConfigParsesWithMergekitSemanticsAndPathsRelativeToIt() throws {
        let c = try parse("""
            merge_method: ties
            base_model: base/
            models:
              - model: a/
                parameters: {weight: 1.0, density: [{filter: attn, value: 0.3}, {value: 0.7}]}
              - model: /abs/b
                parameters: {weight: [0.2, 1.0]}
            parameters: {normalize: false, lambda: 0.5}
            dtype: bfloat16
            out_dtype: float16
            exclude: "*embed*"
            """)
        XCTAssertEqual(c.semantics, .mergekit)
        XCTAssertEqual(c.method.name, "ties")
        XCTAssertEqual(c.baseModel, path("base/"))
        XCTAssertEqual(c.models.map(\.path), [path("a/"), "/abs/b"])
        XCTAssertEqual(c.exclude, ["*embed*"])
        let (base, inputs, o) = try c.plan()
        XCTAssertEqual(base, path("base/"))
        XCTAssertEqual(inputs, [path("a/"), "/abs/b"])
        XCTAssertEqual(o.dtype, .float16, "out_dtype is the output's dtype")
        XCTAssertEqual(o.mergekitNormalize, false)
        XCTAssertEqual(o.lambda, 0.5)
        XCTAssertEqual(o.semantics, .mergekit)
        XCTAssertNotNil(o.tensorSettings)
    }

    func testUnknownRefusedAndMisplacedKeysAreErrorsNamingTheKey() {
        let models = "models:\n  - model: a.h5\n    parameters: {weight: 1}\nbase_model: b.h5\n"
        var m = message { _ = try self.parse("merge_method: ties\n" + models + "tokenizer_source: union\n") }
        XCTAssertTrue(m.contains("tokenizer_source") && m.contains("not supported"), m)
        for key in ["slices", "chat_template", "modules", "tokenizer"] {
            m = message { _ = try self.parse("merge_method: ties\n" + models + "\(key): x\n") }
            XCTAssertTrue(m.contains("'\(key)'") && m.contains("not supported"), m)
        }
        m = message { _ = try self.parse("merge_method: ties\n" + models + "merge_mehtod: ties\n") }
        XCTAssertTrue(m.contains("unknown key 'merge_mehtod'"), m)
        m = message { _ = try self.parse("merge_method: ties\n" + models + "parameters: {densty: 0.3}\n") }
        XCTAssertTrue(m.contains("parameters.densty"), m)
        m = message { _ = try self.parse("merge_method: ties\nbase_model: b.h5\nmodels:\n  - model: a.h5\n    parameters: {lambda: 2}\n") }
        XCTAssertTrue(m.contains("models[0].parameters.lambda") && m.contains("whole merge"), m)
        m = message { _ = try self.parse("merge_method: ties\n" + models + "parameters: {drop_rate: 0.3}\n") }
        XCTAssertTrue(m.contains("drop_rate"), "Locus's keys need semantics: locus: \(m)")
        XCTAssertNoThrow(try parse("semantics: locus\nmerge_method: dare_ties\n" + models + "parameters: {drop_rate: 0.3, scope: tensor}\n"))
        m = message { _ = try self.parse("merge_method: tall\n" + models) }
        XCTAssertTrue(m.contains("semantics: locus"), m)
        m = message { _ = try self.parse("merge_method: passthrough\n" + models) }
        XCTAssertTrue(m.contains("passthrough") && m.contains("not supported"), m)
        m = message { _ = try self.parse("merge_method: ties\n" + models + "parameters: {lambda: [{filter: a, valu: 1}]}\n") }
        XCTAssertTrue(m.contains("valu"), m)
        m = message { _ = try self.parse("merge_method: ties\n" + models + "parameters: {density: -0.5}\n").plan() }
        XCTAssertTrue(m.contains("density must be in [0, ∞)"), m)
        m = message { _ = try self.parse("merge_method: breadcrumbs\n" + models + "parameters: {gamma: [{filter: attn, value: 2}]}\n")
            .plan().options.perTensor(["l.0.attn"], inputCount: 1, file: "c.yml", warn: { _ in }) }
        XCTAssertTrue(m.contains("tensor 'l.0.attn'") && m.contains("gamma must be in [0, 1]"), m)
        m = message { _ = try self.parse("merge_method: ties\n" + models + "parameters: {normalize: maybe}\n") }
        XCTAssertTrue(m.contains("normalize") && m.contains("true or false"), m)
    }

    func testMissingWeightIsAnErrorInMergekitSemanticsAndOneInLocusSemantics() throws {
        let yaml = "merge_method: task_arithmetic\nbase_model: b.h5\nmodels:\n  - model: a.h5\n    parameters: {weight: 2}\n  - model: c.h5\n"
        let m = message { _ = try self.parse(yaml).plan() }
        XCTAssertTrue(m.contains("models[1] has no weight"), m)
        let (_, _, o) = try parse("semantics: locus\n" + yaml).plan()
        XCTAssertEqual(o.weights, [2, 1])
        let (_, _, g) = try parse(yaml + "parameters: {weight: 0.5}\n").plan()
        XCTAssertEqual(g.weights, [2, 0.5], "a model's own value first, then the merge's")
    }

    // MARK: - per-tensor values

    func testFiltersAreSubstringsAndTheFirstMatchWins() throws {
        let s = ParameterSetting.filtered([.init(filter: "self_attn", value: .scalar(.number(0.3))),
                                           .init(filter: "attn", value: .scalar(.number(0.4))),
                                           .init(filter: nil, value: .scalar(.number(0.7)))])
        func v(_ n: String) -> Double? { if case .number(let d)? = s.value(tensor: n, t: 0) { return d } else { return nil } }
        XCTAssertEqual(v("model.layers.0.self_attn.q_proj.weight"), 0.3)
        XCTAssertEqual(v("model.layers.0.cross_attn.q_proj.weight"), 0.4)
        XCTAssertEqual(v("model.layers.0.mlp.up_proj.weight"), 0.7)
        let none = ParameterSetting.filtered([.init(filter: "mlp", value: .scalar(.number(1)))])
        XCTAssertNil(none.value(tensor: "attn.weight", t: 0), "no filter matches: the next source decides")
        let star = ParameterSetting.filtered([.init(filter: "*", value: .scalar(.number(2)))])
        if case .number(let d)? = star.value(tensor: "x", t: 0) { XCTAssertEqual(d, 2) } else { XCTFail() }
    }

    func testGradientsInterpolateAsMergekitDoes() {
        let g = ParameterSetting.gradient([.number(0), .number(1), .number(0.5)])
        // s = t·(n − 1), i = ⌊s⌋, value = (1 − f)·v[i] + f·v[min(i + 1, n − 1)].
        for (t, want) in [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 0.75), (1.0, 0.5)] {
            guard case .number(let d)? = g.value(tensor: "x", t: t) else { return XCTFail() }
            XCTAssertEqual(d, want, accuracy: 1e-15, "t = \(t)")
        }
        let labels = ParameterSetting.gradient([.text("a"), .text("b")])
        XCTAssertEqual(labels.value(tensor: "x", t: 0.9)?.string, "a", "non-numbers are picked, not interpolated")
        let nested = ParameterSetting.filtered([.init(filter: "mlp", value: g)])
        guard case .number(let d)? = nested.value(tensor: "l.3.mlp", t: 0.25) else { return XCTFail() }
        XCTAssertEqual(d, 0.5)
    }

    func testLayerIndexIsTheFirstNumericNameComponent() {
        let names = ["model.embed_tokens.weight", "model.layers.0.mlp.weight", "model.layers.1.mlp.weight", "model.layers.2.self_attn.o_proj.weight",
                     "model.norm.weight", "lm_head.weight"]
        let l = Layering(tensorNames: names)
        XCTAssertEqual(l.count, 3)
        XCTAssertEqual(names.map { l.position(of: $0) }, [0, 0, 0.5, 1, 0, 0])
        XCTAssertEqual(Layering(tensorNames: ["h.0.w"]).position(of: "h.0.w"), 1, "one layer: t = 1 (mergekit)")
    }

    func testIncludeAndExcludeGlobs() {
        var o = MergeOptions()
        o.exclude = ["*embed*", "lm_head.*"]
        XCTAssertFalse(o.merges("model.embed_tokens.weight"))
        XCTAssertFalse(o.merges("lm_head.weight"))
        XCTAssertTrue(o.merges("model.layers.0.mlp.weight"))
        o.include = ["model.layers.*"]
        XCTAssertFalse(o.merges("model.norm.weight"))
        XCTAssertTrue(o.merges("model.layers.1.mlp.weight"))
    }

    func testPerTensorResolutionWarnsOnUnmatchedFiltersAndRefusesLongGradients() throws {
        let names = ["embed.weight", "layers.0.attn.w", "layers.0.mlp.w", "layers.1.attn.w", "layers.1.mlp.w"]
        let c = try parse("""
            merge_method: ties
            base_model: b.h5
            models:
              - model: a.h5
                parameters: {weight: [1, 3], density: [{filter: attn, value: 0.3}, {filter: nowhere, value: 0.1}, {value: 0.7}]}
              - model: c.h5
                parameters: {weight: 1}
            exclude: "embed*"
            """)
        let (_, _, o) = try c.plan()
        var warnings: [String] = []
        let per = try o.perTensor(names, inputCount: 2, file: "c.yml", warn: { warnings.append($0) })
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains("filter 'nowhere'") && warnings[0].contains("models[0].parameters.density"), warnings[0])
        XCTAssertNil(per["embed.weight"], "excluded")
        XCTAssertEqual(per["layers.0.attn.w"]?.weights, [1, 1])
        XCTAssertEqual(per["layers.1.mlp.w"]?.weights, [3, 1])
        XCTAssertEqual(per["layers.0.attn.w"]?.densities, [0.3, 1])
        XCTAssertEqual(per["layers.0.mlp.w"]?.densities, [0.7, 1])
        let long = try parse("merge_method: task_arithmetic\nbase_model: b.h5\nmodels:\n  - model: a.h5\n    parameters: {weight: [1, 2, 3]}\n")
        let m = message { _ = try long.plan().options.perTensor(names, inputCount: 1, file: "c.yml", warn: { _ in }) }
        XCTAssertTrue(m.contains("gradient of 3 values for 2 layers") && m.contains("models[0].parameters.weight"), m)
    }

    // MARK: - merging through the driver

    private let shapes: [(String, [Int])] = [("embed.weight", [5, 3]), ("layers.0.w", [3, 4]), ("layers.1.w", [3, 4]), ("layers.2.w", [4]), ("head.weight", [2, 3])]

    private func writeCheckpoint(_ name: String, _ values: [String: [Float]]) throws -> String {
        let w = try CheckpointWriter(path: path(name))
        for (n, s) in shapes.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) { try w.add(name: n, values: values[n]!, shape: s, dtype: .float32) }
        _ = try w.finish()
        return path(name)
    }

    private func read(_ file: String) throws -> [String: [Float]] {
        let r = try CheckpointReader(path: file)
        return Dictionary(uniqueKeysWithValues: try r.tensors.map { ($0.name, try r.readFloat32($0)) })
    }

    /// A base and two fine-tuned models (every entry moves), with their task vectors.
    private func models() throws -> (base: [String: [Float]], ft: [[String: [Float]]]) {
        var state: UInt64 = 7
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        let base = Dictionary(uniqueKeysWithValues: shapes.map { ($0.0, (0..<$0.1.reduce(1, *)).map { _ in next() }) })
        let ft = (0..<2).map { _ in base.mapValues { $0.map { $0 + 0.1 * next() } } }
        _ = try writeCheckpoint("base.h5", base)
        for (i, f) in ft.enumerated() {
            _ = try writeCheckpoint("ft\(i).h5", f)
            _ = try TaskArithmetic.diff(base: path("base.h5"), finetuned: path("ft\(i).h5"), output: path("tv\(i).h5"))
        }
        return (base, ft)
    }

    func testMergekitTaskArithmeticWithGradientsAndExcludeOnCheckpointsAndTaskVectors() throws {
        let (base, ft) = try models()
        for inputs in [["ft0.h5", "ft1.h5"], ["tv0.h5", "tv1.h5"]] {
            let yaml = """
                merge_method: task_arithmetic
                base_model: base.h5
                models:
                  - model: \(inputs[0])
                    parameters: {weight: [1.0, 0.0]}
                  - model: \(inputs[1])
                    parameters: {weight: [{filter: head, value: 2.0}, {value: 0.5}]}
                exclude: ["embed*"]
                """
            try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
            let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
            let out = path("m-\(inputs[0]).h5")
            try Merger.merge(base: b!, taskVectors: paths, output: out, options: o)
            let got = try read(out)
            XCTAssertEqual(got["embed.weight"], base["embed.weight"], "excluded: the base's")
            // Layers 0, 1, 2 of 3: t = 0, 0.5, 1, so model 0 weighs 1, 0.5, 0; outside the layers (head) t = 0.
            for (n, w0, w1) in [("layers.0.w", 1.0, 0.5), ("layers.1.w", 0.5, 0.5), ("layers.2.w", 0.0, 0.5), ("head.weight", 1.0, 2.0)] {
                for j in base[n]!.indices {
                    let d0 = ft[0][n]![j] - base[n]![j], d1 = ft[1][n]![j] - base[n]![j]
                    let want = Double(base[n]![j]) + Double(Float(w0) * d0 + Float(w1) * d1)
                    XCTAssertEqual(Double(got[n]![j]), want, accuracy: 2e-7, "\(inputs[0]) \(n)[\(j)]")
                }
            }
        }
    }

    /// model_stock, sce and nuslerp on fine-tuned checkpoints compute τ = θ_i − θ_base while reading:
    /// the output has the bits of the same config on the checkpoints' task vectors (`locus diff`),
    /// and nothing besides the output is written beside it.
    func testKernelMethodsOnCheckpointsEqualTheirTaskVectorsBitForBitWithoutTemporaryFiles() throws {
        _ = try models()
        let configs = [
            ("model_stock", "", ["0", "1"]),
            ("model_stock", "parameters: {filter_wise: true}\n", ["0", "1"]),
            ("sce", "parameters: {select_topk: 0.4}\n", ["0", "1"]),
            ("sce", "", ["0", "1"]),
            ("nuslerp", "", ["0", "1"]),
        ]
        for (c, (method, parameters, inputs)) in configs.enumerated() {
            var outputs: [[String: [Float]]] = []
            for kind in ["ft", "tv"] {
                let dir = path("out-\(c)-\(kind)")
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
                let weights = method == "nuslerp" ? "    parameters: {weight: 0.4}\n" : ""
                let yaml = "merge_method: \(method)\nbase_model: base.h5\n\(parameters)models:\n"
                    + inputs.map { "  - model: \(kind)\($0).h5\n" + weights }.joined()
                try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
                let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
                try Merger.merge(base: b!, taskVectors: paths, output: dir + "/m.h5", options: o)
                XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.h5"], "\(method) \(kind)")
                outputs.append(try read(dir + "/m.h5"))
            }
            XCTAssertEqual(outputs[0].keys.sorted(), outputs[1].keys.sorted())
            for (n, want) in outputs[1] {
                XCTAssertEqual(outputs[0][n]!.map(\.bitPattern), want.map(\.bitPattern), "\(method) \(parameters) \(n)")
            }
        }
    }

    /// mergekit's ties, and its della at density 1 (nothing dropped, nothing rescaled), divide the
    /// agreeing weighted sum by the sum of the agreeing weights.
    func testMergekitTiesAndDellaNormalizeByTheAgreeingWeights() throws {
        let (base, ft) = try models()
        for method in ["ties", "della"] {
            let yaml = """
                merge_method: \(method)
                base_model: base.h5
                models:
                  - model: ft0.h5
                    parameters: {weight: 1.0, density: 1}
                  - model: ft1.h5
                    parameters: {weight: 3.0, density: 1}
                """
            try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
            let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
            try Merger.merge(base: b!, taskVectors: paths, output: path("\(method).h5"), options: o)
            let got = try read(path("\(method).h5"))
            for (n, _) in shapes {
                for j in base[n]!.indices {
                    let d = [ft[0][n]![j] - base[n]![j], 3 * (ft[1][n]![j] - base[n]![j])], w: [Float] = [1, 3]
                    let positive = d[0] + d[1] >= 0
                    var mixed: Float = 0, divisor: Float = 0
                    for i in 0..<2 where d[i] != 0 && (d[i] > 0) == positive { mixed += d[i]; divisor += w[i] }
                    let want = Double(base[n]![j]) + Double(mixed / (divisor == 0 ? 1 : divisor))
                    XCTAssertEqual(Double(got[n]![j]), want, accuracy: 2e-7, "\(method) \(n)[\(j)]")
                }
            }
        }
    }

    func testLocusSemanticsResolvesFiltersPerTensorInTheStreamingDriver() throws {
        let (base, ft) = try models()
        let yaml = """
            semantics: locus
            merge_method: task_arithmetic
            base_model: base.h5
            models:
              - model: tv0.h5
              - model: tv1.h5
                parameters: {weight: [{filter: head, value: -1.0}, {value: 1.0}]}
            parameters: {lambda: [{filter: layers.1, value: 2.0}, {value: [0.5, 1.0]}]}
            include: ["layers.*", "head.*"]
            """
        try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
        let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
        XCTAssertEqual(o.semantics, .locus)
        try Merger.merge(base: b!, taskVectors: paths, output: path("m.h5"), options: o)
        let got = try read(path("m.h5"))
        XCTAssertEqual(got["embed.weight"], base["embed.weight"], "not included: the base's")
        // λ: layers.1 → 2; otherwise the gradient [0.5, 1] at t (layers.0: 0, layers.2: 1, head: 0).
        for (n, lambda, w1) in [("layers.0.w", 0.5, 1.0), ("layers.1.w", 2.0, 1.0), ("layers.2.w", 1.0, 1.0), ("head.weight", 0.5, -1.0)] {
            for j in base[n]!.indices {
                let d = (ft[0][n]![j] - base[n]![j]) + Float(w1) * (ft[1][n]![j] - base[n]![j])
                XCTAssertEqual(Double(got[n]![j]), Double(base[n]![j]) + lambda * Double(d), accuracy: 2e-7, "\(n)[\(j)]")
            }
        }
    }

    func testBadConfigsFailBeforeAnyOutput() throws {
        _ = try models()
        let long = "merge_method: task_arithmetic\nbase_model: base.h5\nmodels:\n  - model: ft0.h5\n    parameters: {weight: [1, 2, 3, 4]}\n"
        try long.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
        let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
        let m = message { try Merger.merge(base: b!, taskVectors: paths, output: self.path("out.h5"), options: o) }
        XCTAssertTrue(m.contains("gradient of 4 values for 3 layers"), m)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.h5")))
        // Locus semantics merges task vectors only: a checkpoint among them is named.
        var l = MergeOptions()
        l.method = GTAMethod.ties
        let c = message { try Merger.merge(base: self.path("base.h5"), taskVectors: [self.path("ft0.h5")], output: self.path("out.h5"), options: l) }
        XCTAssertTrue(c.contains("ft0.h5") && c.contains("not a task vector"), c)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.h5")))
    }
}
