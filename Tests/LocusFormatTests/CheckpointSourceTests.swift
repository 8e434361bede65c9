import Foundation
import LocusFormat
import SafeTensors
import LocusTestSupport
import XCTest

final class CheckpointSourceTests: LocusTestCase {
    private func sample() -> [RawTensor] {
        var rng = SplitMix64(seed: 77)
        return [
            randomTensor("b.weight", .bfloat16, [7, 5], &rng),
            randomTensor("a.bias", .float32, [5], &rng),
            randomTensor("c.ids", .int64, [3], &rng),
            randomTensor("d.flag", .bool, [4], &rng),
            randomTensor("e.half", .float16, [2, 3, 2], &rng),
            randomTensor("f.scalar", .float64, [], &rng),
            randomTensor("g.empty", .float32, [0, 4], &rng),
        ]
    }

    private func writeSafeTensors(_ p: String, _ tensors: [RawTensor], metadata: [String: String]? = ["format": "pt"]) throws {
        var w = try SafeTensorsWriter(path: p, tensors: tensors.map { .init(name: $0.name, dtype: $0.dtype.safeTensors, shape: $0.shape) }, metadata: metadata)
        for t in tensors where !t.bytes.isEmpty { try w.write(t.bytes) }
        try w.finish(fsync: false)
    }

    /// A sharded folder as transformers writes it: tensors split over shards, plus the index.
    private func writeFolder(_ dir: String, _ shards: [[RawTensor]], index: [String: String]? = nil) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var map: [String: String] = [:]
        for (i, s) in shards.enumerated() {
            let file = "model-0000\(i + 1)-of-0000\(shards.count).safetensors"
            try writeSafeTensors(dir + "/" + file, s)
            for t in s { map[t.name] = file }
        }
        let weightMap = index ?? map
        let json = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 1], "weight_map": weightMap], options: [.sortedKeys])
        try writeBytes(Array(json), to: dir + "/model.safetensors.index.json")
    }

    private func rawBytes(_ s: any CheckpointSource) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for t in s.tensors {
            var bytes: [UInt8] = []
            try s.forEachBlock(t, blockBytes: 8) { bytes += $0 }   // tiny blocks: streaming in whole rows
            XCTAssertEqual(bytes, try s.readRaw(t), t.name)
            out[t.name] = bytes
        }
        return out
    }

    func testEverySourceKindGivesTheSameTensorsAndFingerprint() throws {
        let tensors = sample()
        let expected = referenceFingerprint(tensors)
        let h5 = path("m.h5"), st = path("m.safetensors"), folder = path("sharded"), single = path("single")
        XCTAssertEqual(try writeCheckpoint(h5, tensors), expected)
        try writeSafeTensors(st, tensors)
        try writeFolder(folder, [Array(tensors[0..<3]), Array(tensors[3...])])
        try FileManager.default.createDirectory(atPath: single, withIntermediateDirectories: true)
        try writeSafeTensors(single + "/model.safetensors", tensors)

        XCTAssertEqual(try detectCheckpointKind(path: h5), .locus)
        XCTAssertEqual(try detectCheckpointKind(path: st), .safetensors)
        XCTAssertEqual(try detectCheckpointKind(path: folder), .safetensorsFolder)
        let want = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.bytes) })
        for p in [h5, st, folder, single] {
            let s = try openCheckpoint(path: p, options: .init())
            XCTAssertEqual(s.tensors.map(\.name), tensors.map(\.name).sorted(), p)
            XCTAssertEqual(try s.fingerprint, expected, p)
            XCTAssertEqual(try s.computeFingerprint(blockBytes: 16), expected, p)
            XCTAssertEqual(try rawBytes(s), want, p)
            let b = s.tensor(named: "b.weight")!
            let rows = try s.readRowsFloat64(b, start: 2, count: 3)
            let all = try s.readFloat64(b)
            XCTAssertEqual(rows, Array(all[10..<25]), p)
            XCTAssertEqual(try s.readFloat32(b).map(Double.init), all, p)
        }
        // Folder metadata: the index's, without total_size.
        XCTAssertNil(try openCheckpoint(path: folder, options: .init()).metadata()?["total_size"])
    }

    func testIndexProblemsNameTheFileAndTensor() throws {
        let t = sample()
        // A shard listed by the index is missing.
        let missing = path("missing")
        try writeFolder(missing, [Array(t[0..<3]), Array(t[3...])])
        try FileManager.default.removeItem(atPath: missing + "/model-00002-of-00002.safetensors")
        let e1 = expectLocusError(mentioning: "index.json") { _ = try openCheckpoint(path: missing, options: .init()) }
        XCTAssertTrue(e1?.description.contains("model-00002-of-00002.safetensors") ?? false, "\(String(describing: e1))")

        // The same tensor in two shards.
        let twice = path("twice")
        try writeFolder(twice, [Array(t[0..<3]), Array(t[2...])])
        let e2 = expectLocusError { _ = try openCheckpoint(path: twice, options: .init()) }
        XCTAssertTrue(e2?.description.contains("c.ids") ?? false, "\(String(describing: e2))")

        // A tensor in a shard that the index does not list.
        let unlisted = path("unlisted")
        var map = Dictionary(uniqueKeysWithValues: t.map { ($0.name, "model-00001-of-00001.safetensors") })
        map["a.bias"] = nil
        try writeFolder(unlisted, [t], index: map)
        let e3 = expectLocusError(mentioning: "model-00001-of-00001.safetensors") { _ = try openCheckpoint(path: unlisted, options: .init()) }
        XCTAssertTrue(e3?.description.contains("a.bias") ?? false)

        // The index lists a tensor its shard does not hold.
        let ghost = path("ghost")
        map = Dictionary(uniqueKeysWithValues: t.map { ($0.name, "model-00001-of-00001.safetensors") })
        map["z.ghost"] = "model-00001-of-00001.safetensors"
        try writeFolder(ghost, [t], index: map)
        let e4 = expectLocusError { _ = try openCheckpoint(path: ghost, options: .init()) }
        XCTAssertTrue(e4?.description.contains("z.ghost") ?? false)

        // Shards outside the folder.
        for bad in ["../x.safetensors", "/etc/passwd", "sub/x.safetensors"] {
            let dir = path("outside-\(abs(bad.hashValue))")
            map = Dictionary(uniqueKeysWithValues: t.map { ($0.name, "model-00001-of-00001.safetensors") })
            map["a.bias"] = bad
            try writeFolder(dir, [t], index: map)
            let e = expectLocusError(mentioning: "index.json") { _ = try openCheckpoint(path: dir, options: .init()) }
            XCTAssertTrue(e?.description.contains(bad) ?? false, "\(String(describing: e))")
        }

        // A tensor listed twice in weight_map (duplicate JSON key).
        let dup = path("dup")
        try writeFolder(dup, [t])
        let text = "{\"weight_map\": {\"a.bias\": \"model-00001-of-00001.safetensors\", \"a.bias\": \"model-00001-of-00001.safetensors\"}}"
        try writeBytes(Array(text.utf8), to: dup + "/model.safetensors.index.json")
        let e5 = expectLocusError(mentioning: "index.json") { _ = try openCheckpoint(path: dup, options: .init()) }
        XCTAssertTrue(e5?.description.contains("a.bias") ?? false)

        // A truncated shard.
        let cut = path("cut")
        try writeFolder(cut, [Array(t[0..<3]), Array(t[3...])])
        let shard = cut + "/model-00001-of-00002.safetensors"
        let bytes = try readBytes(shard)
        try writeBytes(Array(bytes.dropLast(4)), to: shard)
        expectLocusError(mentioning: "model-00001-of-00002.safetensors") { _ = try openCheckpoint(path: cut, options: .init()) }

        // A dtype Locus cannot hold.
        let f8 = path("f8.safetensors")
        var w = try SafeTensorsWriter(path: f8, tensors: [.init(name: "q", dtype: .F8_E4M3, shape: [2])], metadata: nil)
        try w.write([1, 2]); try w.finish(fsync: false)
        let e6 = expectLocusError(mentioning: f8) { _ = try openCheckpoint(path: f8, options: .init()) }
        XCTAssertTrue(e6?.description.contains("'q'") ?? false)

        // A folder that is not a model folder.
        let empty = path("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        expectLocusError(mentioning: empty) { _ = try openCheckpoint(path: empty, options: .init()) }
    }

    func testFolderWriterShardsLikeTransformersAndRoundTrips() throws {
        let tensors = sample()
        let h5 = path("m.h5")
        try writeCheckpoint(h5, tensors, metadata: ["format": "pt"], architecture: "{\"x\":1}")
        let src = try openCheckpoint(path: h5, options: .init())
        let out = path("out")
        // 7×5 bf16 = 70 bytes is the biggest tensor: a 64-byte limit gives it a shard of its own.
        let fp = try Conversion.write(src, to: out + "/", architecture: try src.architecture(), format: .hf, shardBytes: 64, provenance: Provenance())
        XCTAssertEqual(fp, referenceFingerprint(tensors))
        let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertTrue(files.contains("model.safetensors.index.json"), "\(files)")
        let shards = files.filter { $0.hasSuffix(".safetensors") }
        XCTAssertGreaterThan(shards.count, 1)
        XCTAssertTrue(shards.allSatisfy { $0.hasPrefix("model-0000") && $0.contains("-of-0000\(shards.count)") }, "\(shards)")
        for s in shards { XCTAssertEqual(try SafeTensorsReader(path: out + "/" + s).metadata?["format"], "pt") }
        let back = try openCheckpoint(path: out, options: .init())
        XCTAssertEqual(try back.fingerprint, referenceFingerprint(tensors))
        XCTAssertEqual(try back.architecture(), "{\"x\":1}")
        XCTAssertEqual(try back.metadata(), ["format": "pt"])
        XCTAssertEqual(try listing().filter { $0.hasPrefix(".") }, [], "no temporary left behind")

        // Everything fits one shard: a single model.safetensors and no index.
        let one = path("one")
        try Conversion.write(src, to: one, architecture: nil, format: .hf, provenance: Provenance())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: one), ["model.safetensors"])
        XCTAssertEqual(try openCheckpoint(path: one, options: .init()).fingerprint, referenceFingerprint(tensors))

        // --dtype converts float tensors only.
        let bf = path("bf")
        try Conversion.write(src, to: bf, architecture: nil, format: .hf, dtype: .bfloat16, provenance: Provenance())
        let conv = try openCheckpoint(path: bf, options: .init())
        XCTAssertEqual(conv.tensors.filter { $0.dtype.isFloatingPoint }.map(\.dtype), Array(repeating: .bfloat16, count: 5))
        XCTAssertEqual(conv.tensor(named: "c.ids")?.dtype, .int64)
        let a = try src.readFloat64(src.tensor(named: "a.bias")!)
        XCTAssertEqual(try conv.readFloat64(conv.tensor(named: "a.bias")!), a.map { Double(HalfPrecision.float(fromBFloat16: HalfPrecision.bfloat16Bits(Float($0)))) })
    }

    func testFolderOutputIsAtomic() throws {
        let tensors = sample()
        let target = path("model")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try writeBytes([1, 2, 3], to: target + "/old.txt")
        let plan = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }.map { TensorPlan(name: $0.name, dtype: $0.dtype, shape: $0.shape) }

        // A writer that fails half-way (wrong tensor, then never finished) leaves the old folder and no temporary.
        do {
            let w = try HuggingFaceFolderWriter(target: target, plan: plan, shardBytes: 40)
            XCTAssertTrue(try listing().contains { $0.hasPrefix(".model.locus-tmp-") })
            let first = tensors.first { $0.name == plan[0].name }!
            try first.bytes.withUnsafeBytes { try w.add(name: first.name, dtype: first.dtype, shape: first.shape, bytes: $0) }
            expectLocusError(mentioning: target) { try w.beginTensor(name: "not-planned", dtype: .float32, shape: [1]) }
            expectLocusError(mentioning: target) { try w.finish() }
        }
        XCTAssertEqual(try listing(), ["model"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: target), ["old.txt"])

        // An incomplete folder is refused at finish and changes nothing either.
        do {
            let w = try HuggingFaceFolderWriter(target: target, plan: plan)
            expectLocusError(mentioning: target) { try w.finish() }
        }
        XCTAssertEqual(try listing(), ["model"])

        // A complete write replaces the old folder as a whole.
        let w = try HuggingFaceFolderWriter(target: target, plan: plan, shardBytes: 40)
        for p in plan {
            let t = tensors.first { $0.name == p.name }!
            try t.bytes.withUnsafeBytes { try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) }
        }
        XCTAssertEqual(try w.finish(), referenceFingerprint(tensors))
        XCTAssertEqual(try listing(), ["model"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: target + "/old.txt"))
        XCTAssertEqual(try openCheckpoint(path: target, options: .init()).fingerprint, referenceFingerprint(tensors))

        // A file where the folder should go is refused before anything is written.
        try writeBytes([0], to: path("file"))
        expectLocusError(mentioning: path("file")) { _ = try HuggingFaceFolderWriter(target: path("file"), plan: plan) }
    }

    func testOpenClipToTimmTableAndItsInverse() throws {
        let d = 4, n = 5
        let names: [(String, [Int], String, [Int])] = [
            ("visual.conv1.weight", [d, 3, 2, 2], "patch_embed.proj.weight", [d, 3, 2, 2]),
            ("visual.class_embedding", [d], "cls_token", [1, 1, d]),
            ("visual.positional_embedding", [n, d], "pos_embed", [1, n, d]),
            ("visual.ln_pre.weight", [d], "norm_pre.weight", [d]),
            ("visual.transformer.resblocks.0.ln_1.bias", [d], "blocks.0.norm1.bias", [d]),
            ("visual.transformer.resblocks.0.ln_2.weight", [d], "blocks.0.norm2.weight", [d]),
            ("visual.transformer.resblocks.11.attn.in_proj_weight", [3 * d, d], "blocks.11.attn.qkv.weight", [3 * d, d]),
            ("visual.transformer.resblocks.11.attn.in_proj_bias", [3 * d], "blocks.11.attn.qkv.bias", [3 * d]),
            ("visual.transformer.resblocks.1.attn.out_proj.weight", [d, d], "blocks.1.attn.proj.weight", [d, d]),
            ("visual.transformer.resblocks.1.mlp.c_fc.bias", [2 * d], "blocks.1.mlp.fc1.bias", [2 * d]),
            ("visual.transformer.resblocks.1.mlp.c_proj.weight", [d, 2 * d], "blocks.1.mlp.fc2.weight", [d, 2 * d]),
            ("visual.ln_post.bias", [d], "norm.bias", [d]),
            ("visual.proj", [d, 3], "proj", [d, 3]),
        ]
        var rng = SplitMix64(seed: 5)
        var tensors = names.map { randomTensor($0.0, .float32, $0.1, &rng) }
        tensors.append(randomTensor("text_projection", .float32, [3, 3], &rng))
        tensors.append(randomTensor("transformer.resblocks.0.ln_1.weight", .float32, [d], &rng))   // text tower: dropped
        let st = path("clip.safetensors")
        try writeSafeTensors(st, tensors)
        let renaming = TensorRenaming(stripPrefix: "visual.", table: .openClipToTimm)
        let s = try openCheckpoint(path: st, options: .init(renaming: renaming))
        XCTAssertEqual((s as? RenamedSource)?.droppedCount, 2)
        XCTAssertEqual(s.tensors.count, names.count)
        for (old, _, new, shape) in names {
            let t = try XCTUnwrap(s.tensor(named: new), new)
            XCTAssertEqual(t.shape, shape, new)
            var streamed: [UInt8] = []
            try s.forEachBlock(t, blockBytes: 16) { streamed += $0 }
            XCTAssertEqual(streamed, tensors.first { $0.name == old }!.bytes, new)
            if t.shape.first.map({ $0 > 1 }) ?? false {
                var rows = [UInt8](repeating: 0, count: t.rowByteCount)
                try rows.withUnsafeMutableBytes { try s.readRows(t, start: 1, count: 1, into: $0) }
                XCTAssertEqual(rows, Array(streamed[t.rowByteCount..<(2 * t.rowByteCount)]), new)
            }
        }
        // Back again: timm-to-open_clip restores names and shapes.
        let h5 = path("vit.h5")
        try Conversion.write(s, to: h5, architecture: nil, format: .h5, provenance: Provenance())
        let back = try openCheckpoint(path: h5, options: .init(renaming: TensorRenaming(table: .timmToOpenClip)))
        XCTAssertEqual(Set(back.tensors.map { "visual." + $0.name + "\($0.shape)" }), Set(names.map { $0.0 + "\($0.1)" }))
    }

    func testRenameRulesAndCollisions() throws {
        let rules = try RenameRule.parse(text: """
            # comments and blank lines are skipped

            encoder\\.layer\\.(\\d+)\\.(.*) → blocks.$1.$2
            (.*)\\.gamma -> $1.weight
            """, file: "rules.txt")
        XCTAssertEqual(rules.map(\.line), [3, 4])
        let r = TensorRenaming(rules: rules)
        XCTAssertEqual(r.apply(name: "encoder.layer.3.ln.gamma", shape: [2])?.name, "blocks.3.ln.gamma", "first match wins")
        XCTAssertEqual(r.apply(name: "head.gamma", shape: [2])?.name, "head.weight")
        XCTAssertEqual(r.apply(name: "untouched", shape: [2])?.name, "untouched")

        let e1 = expectLocusError(mentioning: "rules.txt") { _ = try RenameRule.parse(text: "a → b\nno arrow here", file: "rules.txt") }
        XCTAssertTrue(e1?.description.contains("line 2") ?? false)
        let e2 = expectLocusError(mentioning: "rules.txt") { _ = try RenameRule.parse(text: "\n(unclosed → x", file: "rules.txt") }
        XCTAssertTrue(e2?.description.contains("line 2") ?? false)
        let e3 = expectLocusError(mentioning: "rules.txt") { _ = try RenameRule.parse(text: "(a) → $2", file: "rules.txt") }
        XCTAssertTrue(e3?.description.contains("line 1") ?? false)

        var rng = SplitMix64(seed: 9)
        let st = path("two.safetensors")
        try writeSafeTensors(st, [randomTensor("x.gamma", .float32, [2], &rng), randomTensor("x.weight", .float32, [2], &rng)])
        let e4 = expectLocusError(mentioning: st) {
            _ = try openCheckpoint(path: st, options: .init(renaming: TensorRenaming(rules: try RenameRule.parse(text: "(.*)\\.gamma → $1.weight", file: "r"))))
        }
        XCTAssertTrue((e4?.description.contains("'x.gamma'") ?? false) && (e4?.description.contains("'x.weight'") ?? false), "\(String(describing: e4))")
        expectLocusError(mentioning: st) { _ = try openCheckpoint(path: st, options: .init(renaming: TensorRenaming(stripPrefix: "visual."))) }
    }
}
