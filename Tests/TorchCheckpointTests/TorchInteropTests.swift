import Foundation
import LocusRandom
import LocusTestSupport
import XCTest

@testable import TorchCheckpoint

/// Files written by torch itself; bytes compared bit-exactly with torch's `.contiguous()` layout.
final class TorchInteropTests: XCTestCase {
    /// Every dtype, shared storages, transposed / stepped / offset views, 0-d, empty and expanded
    /// tensors, in pickle protocols 2 and 4 (the latter uses FRAME, MEMOIZE and STACK_GLOBAL).
    func testDtypesViewsAndSharedStorages() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            out, manifest, protocol = sys.argv[1], sys.argv[2], int(sys.argv[3])
            g = torch.Generator().manual_seed(7)
            base = torch.randn(6, 10, generator=g)
            t = {}
            t["f64"] = torch.randn(3, 4, generator=g, dtype=torch.float64)
            t["f32"] = torch.randn(5, generator=g)
            t["f16"] = torch.randn(2, 3, generator=g).half()
            t["bf16"] = torch.randn(4, 2, generator=g).bfloat16()
            t["i64"] = torch.randint(-2**40, 2**40, (3, 3), generator=g, dtype=torch.int64)
            t["i32"] = torch.randint(-2**30, 2**30, (7,), generator=g, dtype=torch.int32)
            t["i16"] = torch.randint(-2**15, 2**15, (2, 2, 2), generator=g, dtype=torch.int16)
            t["i8"] = torch.randint(-128, 128, (9,), generator=g, dtype=torch.int8)
            t["u8"] = torch.randint(0, 256, (3, 5), generator=g, dtype=torch.uint8)
            t["bool"] = torch.randint(0, 2, (4, 3), generator=g).bool()
            t["base"] = base
            t["transposed"] = base.t()
            t["stepped"] = base[1::2, ::3]
            t["row_offset"] = base[4]
            t["narrow"] = base[:, 3:7]
            t["scalar"] = torch.tensor(2.5)
            t["scalar_view"] = base[2, 5]
            t["empty"] = torch.zeros(0, 4)
            t["empty_view"] = base[3:3]
            t["expanded"] = torch.arange(3.0).unsqueeze(1).expand(3, 4)
            t["permuted"] = torch.randn(2, 3, 4, generator=g).permute(2, 0, 1)
            t["bf16_t"] = torch.randn(3, 5, generator=g).bfloat16().t()
            t["half_step"] = torch.randn(8, generator=g).half()[1::3]
            torch.save(t, out, pickle_protocol=protocol)
            dump_manifest(manifest, t)
            """#
        for pickleProtocol in [2, 4] {
            let path = directory + "/views-\(pickleProtocol).pt"
            let manifest = directory + "/views-\(pickleProtocol).json"
            _ = try runPythonOrFail(script, [path, manifest, String(pickleProtocol)])
            XCTAssertTrue(TorchCheckpointReader.isTorchCheckpoint(path: path))
            let reader = try TorchCheckpointReader(path: path)
            XCTAssertEqual(reader.entries.count, 23)
            XCTAssertEqual(reader.entry(named: "scalar")?.shape, [])
            XCTAssertEqual(reader.entry(named: "scalar")?.elementCount, 1)
            XCTAssertEqual(reader.entry(named: "empty")?.byteCount, 0)
            XCTAssertEqual(reader.entry(named: "bf16")?.dtype, .bfloat16)
            try assertMatchesManifest(reader, manifestPath: manifest)
        }
    }

    /// An nn.Module's state dict: an OrderedDict with `_metadata`, parameters and buffers
    /// (BatchNorm's int64 num_batches_tracked), in state_dict() order; also nn.Parameter values.
    func testModuleStateDictAndParameters() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            out, manifest, params_out, params_manifest = sys.argv[1:5]
            torch.manual_seed(3)
            model = torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5), torch.nn.LayerNorm(5))
            model(torch.randn(2, 3, 8, 8))  # updates the BatchNorm buffers
            sd = model.state_dict()
            assert hasattr(sd, "_metadata")
            torch.save(sd, out)
            dump_manifest(manifest, sd)
            params = {"weight": torch.nn.Parameter(torch.randn(3, 2)), "frozen": torch.nn.Parameter(torch.randn(4), requires_grad=False)}
            torch.save(params, params_out)
            dump_manifest(params_manifest, params)
            """#
        let paths = ["sd.pt", "sd.json", "params.pt", "params.json"].map { directory + "/" + $0 }
        _ = try runPythonOrFail(script, paths)
        let reader = try TorchCheckpointReader(path: paths[0])
        XCTAssertEqual(reader.entry(named: "1.num_batches_tracked")?.dtype, .int64)
        XCTAssertEqual(reader.containerKey, "")
        try assertMatchesManifest(reader, manifestPath: paths[1])
        try assertMatchesManifest(try TorchCheckpointReader(path: paths[2]), manifestPath: paths[3])
    }

    /// Checkpoints that wrap the state dict: found automatically when only one dict holds
    /// tensors; otherwise the error lists the candidates and `key` selects one.
    func testNestedContainersAndKeySelection() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            d = sys.argv[1]
            torch.manual_seed(5)
            model = torch.nn.Linear(4, 3)
            sd = model.state_dict()
            torch.save({"state_dict": sd, "epoch": 7, "name": "run", "none": None}, d + "/wrapped.pt")
            dump_manifest(d + "/model.json", sd)
            opt = torch.optim.Adam(model.parameters())
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            torch.save({"model": sd, "optimizer": opt.state_dict(), "step": 1}, d + "/training.pt")
            dump_manifest(d + "/model_after_step.json", sd)
            dump_manifest(d + "/exp_avg.json", opt.state_dict()["state"][0])
            torch.save({"a.b": {"w": sd["weight"]}, "a": {"b": {"c": {"v": sd["bias"]}}}}, d + "/dotted.pt")
            torch.save({"w": torch.ones(2), "ema": {"w": torch.zeros(2)}}, d + "/toplevel.pt")
            torch.save({"epoch": 3}, d + "/notensors.pt")
            # The layout of a PyTorch Lightning checkpoint: optimizer states sit in a list.
            torch.save({"epoch": 3, "global_step": 10, "pytorch-lightning_version": "2.4.0", "state_dict": sd,
                        "optimizer_states": [opt.state_dict()], "lr_schedulers": [], "hyper_parameters": {"lr": 0.1, "layers": [4, 3]},
                        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 4}}}}}, d + "/lightning.ckpt")
            """#
        _ = try runPythonOrFail(script, [directory])

        let wrapped = try TorchCheckpointReader(path: directory + "/wrapped.pt")
        XCTAssertEqual(wrapped.containerKey, "state_dict")
        try assertMatchesManifest(wrapped, manifestPath: directory + "/model.json")

        let lightning = try TorchCheckpointReader(path: directory + "/lightning.ckpt")
        XCTAssertEqual(lightning.containerKey, "state_dict")
        try assertMatchesManifest(lightning, manifestPath: directory + "/model_after_step.json")

        let ambiguous = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/training.pt") }
        guard case .container = ambiguous else { return XCTFail("\(String(describing: ambiguous))") }
        assertDescription(ambiguous, contains: ["'model'", "'optimizer.state.0'", "pass the key"])
        try assertMatchesManifest(try TorchCheckpointReader(path: directory + "/training.pt", key: "model"), manifestPath: directory + "/model_after_step.json")
        let optimizerState = try TorchCheckpointReader(path: directory + "/training.pt", key: "optimizer.state.0")
        try assertMatchesManifest(optimizerState, manifestPath: directory + "/exp_avg.json")

        // Keys are kept verbatim: "a.b" (one key with a dot) is found whole, and "a.b.c" is found
        // as a → b → c after "a.b" → "c" leads nowhere.
        XCTAssertEqual(try TorchCheckpointReader(path: directory + "/dotted.pt", key: "a.b").entries.map(\.name), ["w"])
        XCTAssertEqual(try TorchCheckpointReader(path: directory + "/dotted.pt", key: "a.b.c").entries.map(\.name), ["v"])

        // Tensors at the top level and in a sub-dict: ambiguous; "" selects the top level.
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/toplevel.pt") }, contains: ["'' (top level)", "'ema'"])
        XCTAssertEqual(try TorchCheckpointReader(path: directory + "/toplevel.pt", key: "").entries.map(\.name), ["w"])
        XCTAssertEqual(try TorchCheckpointReader(path: directory + "/toplevel.pt", key: "ema").entries.map(\.name), ["w"])

        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/wrapped.pt", key: "model") }, contains: ["no key 'model'", "'state_dict'"])
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/wrapped.pt", key: "epoch") }, contains: ["'epoch' holds an integer"])
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/notensors.pt") }, contains: ["holds no tensors"])
    }

    /// transformers' `save_pretrained(safe_serialization=False)` writes pytorch_model.bin with
    /// torch.save (transformers 4; version 5 writes only safetensors, so the test makes the same
    /// torch.save call itself); tied weights share one storage.
    func testTransformersPytorchModelBin() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            try:
                import transformers
            except ImportError:
                print("SKIP transformers not installed"); sys.exit(0)
            d = sys.argv[1]
            torch.manual_seed(0)
            config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_position_embeddings=20)
            model = transformers.BertForMaskedLM(config)
            model.save_pretrained(d, safe_serialization=False)
            if not os.path.exists(d + "/pytorch_model.bin"):
                # transformers 5 dropped the .bin writer; its 4.x writer was this torch.save call.
                torch.save(model.state_dict(), d + "/pytorch_model.bin")
            sd = torch.load(d + "/pytorch_model.bin", weights_only=True)
            dump_manifest(d + "/manifest.json", sd)
            """#
        let output = try runPythonOrFail(script, [directory])
        if output.contains("SKIP") { throw XCTSkip(output) }
        let path = directory + "/pytorch_model.bin"
        XCTAssertTrue(TorchCheckpointReader.isTorchCheckpoint(path: path))
        let reader = try TorchCheckpointReader(path: path)
        XCTAssertGreaterThan(reader.entries.count, 20)
        try assertMatchesManifest(reader, manifestPath: directory + "/manifest.json")
    }

    /// ZIP64 records everywhere (sentinels in the 32-bit fields, values in extra fields, ZIP64
    /// end records) and a deflated data.pkl: Python's zipfile and torch.load read the rewritten
    /// file, and so must this reader.
    func testZip64RecordsAndDeflatedPickle() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            d = sys.argv[1]
            t = {"w": torch.randn(5, 3), "t": torch.randn(3, 4).t(), "h": torch.arange(6, dtype=torch.int16)}
            torch.save(t, d + "/plain.pt")
            dump_manifest(d + "/manifest.json", t)
            pkl = [n for n in zipfile.ZipFile(d + "/plain.pt").namelist() if n.endswith("/data.pkl")][0]
            for name, kwargs in [("zip64", {"zip64": True}), ("deflated", {"deflate": (pkl,)}), ("both", {"zip64": True, "deflate": (pkl,)})]:
                rewrite_zip(d + "/plain.pt", d + "/" + name + ".pt", **kwargs)
                with zipfile.ZipFile(d + "/" + name + ".pt") as z:
                    assert z.testzip() is None
                loaded = torch.load(d + "/" + name + ".pt", weights_only=True)
                assert all(torch.equal(loaded[k], t[k]) for k in t), name
            # The stored members of a deflated rewrite must be refused when they are storages.
            storage = [n for n in zipfile.ZipFile(d + "/plain.pt").namelist() if "/data/" in n][0]
            rewrite_zip(d + "/plain.pt", d + "/deflated_storage.pt", deflate=(storage,))
            """#
        _ = try runPythonOrFail(script, [directory])
        for name in ["zip64", "deflated", "both"] {
            let reader = try TorchCheckpointReader(path: directory + "/\(name).pt")
            try assertMatchesManifest(reader, manifestPath: directory + "/manifest.json")
        }
        let compressed = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/deflated_storage.pt") }
        assertDescription(compressed, contains: ["is compressed", "/data/"])
    }

    /// A storage of more than 4 GiB and a data.pkl whose local header lies beyond 4 GiB: only
    /// ZIP64 records can describe them. The file is sparse (a hole of zeros with a marker at its
    /// end), so it takes a few kilobytes of disk. Python's zipfile reads data.pkl at its 64-bit
    /// offset; this reader must find the marker in the last bytes of the tensor.
    func testStorageAndMemberBeyondFourGiB() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let path = directory + "/big.pt"
        let script = #"""
            import pickle, collections, torch
            path = sys.argv[1]
            count = (1 << 30) + 1024           # float32 elements: 4 GiB + 4 KiB of storage
            class Storage: pass
            class Tensor:
                def __reduce__(self):
                    return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (count,), (1,), False, collections.OrderedDict()))
            class Pickler(pickle.Pickler):
                def persistent_id(self, obj):
                    return ("storage", torch.FloatStorage, "0", "cpu", count) if isinstance(obj, Storage) else None
            buffer = io.BytesIO()
            Pickler(buffer, protocol=2).dump(collections.OrderedDict(big=Tensor()))
            pkl = buffer.getvalue()
            marker = struct.pack("<2f", 1.5, -2.25)
            central = bytearray()
            with open(path, "wb") as f:
                def member(name, size, crc, write):
                    offset = f.tell()
                    encoded = name.encode()
                    extra = struct.pack("<HHQQ", 1, 16, size, size)
                    f.write(struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra)))
                    f.write(encoded + extra)
                    write()
                    cextra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
                    central.extend(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF))
                    central.extend(encoded + cextra)
                def storage():
                    f.seek(count * 4 - len(marker), 1)   # a hole: zeros
                    f.write(marker)
                member("archive/data/0", count * 4, 0, storage)   # storage CRCs are not checked
                member("archive/data.pkl", len(pkl), zlib.crc32(pkl), lambda: f.write(pkl))
                cd_offset = f.tell()
                f.write(central)
                record = f.tell()
                f.write(struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, 2, 2, len(central), cd_offset))
                f.write(struct.pack("<IIQI", 0x07064b50, 0, record, 1))
                f.write(struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("archive/data.pkl")
                assert info.header_offset > 1 << 32, info.header_offset
                assert z.read("archive/data.pkl") == pkl
                assert z.getinfo("archive/data/0").file_size == count * 4
            """#
        _ = try runPythonOrFail(script, [path])
        let reader = try TorchCheckpointReader(path: path)
        let entry = try XCTUnwrap(reader.entry(named: "big"))
        let count = (1 << 30) + 1024
        XCTAssertEqual(entry.shape, [count])
        XCTAssertEqual(entry.byteCount, count * 4)
        var tail = [Float](repeating: 0, count: 2)
        try tail.withUnsafeMutableBytes { try reader.read(entry, fromByte: entry.byteCount - 8, into: $0) }
        XCTAssertEqual(tail, [1.5, -2.25])
        var head = [Float](repeating: 9, count: 4)
        try head.withUnsafeMutableBytes { try reader.read(entry, fromByte: 0, into: $0) }
        XCTAssertEqual(head, [0, 0, 0, 0])
    }

    /// Random damage to the data.pkl of a real module state dict (memo, OrderedDict, _metadata,
    /// shared storages), re-wrapped so the CRC matches: read or refused, never a trap.
    func testRandomlyDamagedTorchPicklesNeverTrap() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let source = directory + "/model.pt"
        _ = try runPythonOrFail(#"""
            import torch
            torch.manual_seed(1)
            model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
            sd = model.state_dict()
            sd["tied"] = sd["0.weight"]
            sd["view"] = sd["2.weight"].t()
            torch.save(sd, sys.argv[1])
            """#, [source])
        let archive = try ZipArchive(file: try CheckpointFile(path: source))
        var members = try archive.members.map { ($0.name, try archive.contents(of: $0, limit: 1 << 20)) }
        let pickleIndex = try XCTUnwrap(members.firstIndex { $0.0.hasSuffix("/data.pkl") })
        let pickle = members[pickleIndex].1
        XCTAssertEqual(try TorchCheckpointReader(path: source).entries.count, 11)
        var generator = SplitMix64(seed: 99)
        let path = directory + "/fuzz.pt"
        var accepted = 0
        for _ in 0..<1000 {
            var damaged = pickle
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let position = Int.random(in: 0..<damaged.count, using: &generator)
                damaged[position] = UInt8.random(in: 0...255, using: &generator)
            }
            members[pickleIndex].1 = damaged
            try writeFileBytes(CorruptInputTests.zipImage(members), to: path)
            do {
                let reader = try TorchCheckpointReader(path: path)
                accepted += 1
                for entry in reader.entries where entry.byteCount <= 1 << 20 { _ = try? reader.readBytes(entry) }
            } catch is TorchCheckpointError {
                continue
            }
        }
        XCTAssertLessThan(accepted, 1000)
    }

    /// Other formats torch writes: refused with how to re-save.
    func testLegacyAndTorchScriptFilesAreRefusedWithAdvice() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import torch
            d = sys.argv[1]
            torch.save({"w": torch.ones(2)}, d + "/legacy.pt", _use_new_zipfile_serialization=False)
            torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), d + "/script.pt")
            with zipfile.ZipFile(d + "/other.zip", "w") as z:
                z.writestr("a/b.txt", "hello")
            open(d + "/text.txt", "w").write("not a checkpoint at all")
            """#
        _ = try runPythonOrFail(script, [directory])
        XCTAssertTrue(TorchCheckpointReader.isTorchCheckpoint(path: directory + "/legacy.pt"))
        let legacy = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/legacy.pt") }
        guard case .unsupportedFormat = legacy else { return XCTFail("\(String(describing: legacy))") }
        assertDescription(legacy, contains: ["legacy format", "torch.save("])
        XCTAssertTrue(TorchCheckpointReader.isTorchCheckpoint(path: directory + "/script.pt"))
        let script2 = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/script.pt") }
        assertDescription(script2, contains: ["TorchScript", "state_dict()"])
        XCTAssertFalse(TorchCheckpointReader.isTorchCheckpoint(path: directory + "/other.zip"))
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/other.zip") }, contains: ["data.pkl"])
        XCTAssertFalse(TorchCheckpointReader.isTorchCheckpoint(path: directory + "/text.txt"))
        XCTAssertFalse(TorchCheckpointReader.isTorchCheckpoint(path: directory + "/missing.pt"))
        let missing = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/missing.pt") }
        guard case .system(_, _, let code) = missing else { return XCTFail("\(String(describing: missing))") }
        XCTAssertEqual(code, ENOENT)
    }
}
