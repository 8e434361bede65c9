"""Real checkpoints in and out: Hugging Face folders written by transformers and safetensors, read in place by
every command and imported bit-exact; folders Locus writes, loaded by safetensors and transformers; renaming of
an open_clip vision tower checked against timm's own converter."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import torch  # make deps installs torch, transformers, open_clip and timm: missing is a failure
from safetensors.torch import load_file, save_file  # noqa: E402

from conftest import assert_error, assert_invalid, assert_ok, snapshot, spec_fingerprint, st_fingerprint, st_read  # noqa: E402

import transformers  # noqa: E402


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


def folder_tensors(d):
    """{name: (ST dtype, shape, raw bytes)} over every shard of a folder, read by hand from the bytes."""
    out = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        _, t = st_read(f)
        assert not set(t) & set(out), f"tensor in two shards of {d}"
        out.update(t)
    return out


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    base, ft = tiny_bert(0), tiny_bert(0)
    with torch.no_grad():
        for name, p in ft.named_parameters():
            if "attention.self.query" in name or "intermediate.dense.weight" in name:
                p.add_(0.01 * torch.randn_like(p))
    base.save_pretrained(d / "base", max_shard_size="200KB")
    ft.save_pretrained(d / "ft", max_shard_size="200KB")
    return d


def test_transformers_sharded_folder_imports_bit_exact(locus, bert):
    src = bert / "base"
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert len(shards) > 1 and (src / "model.safetensors.index.json").is_file(), shards
    assert_ok(locus("convert", src, bert / "base.h5"))
    expected = st_fingerprint(folder_tensors(src))
    assert spec_fingerprint(bert / "base.h5") == expected
    # Exported again as one file: the same bytes as transformers wrote, tensor by tensor.
    assert_ok(locus("convert", bert / "base.h5", bert / "base.safetensors"))
    _, back = st_read(bert / "base.safetensors")
    assert back == folder_tensors(src)
    # Read in place: inspect lists every tensor, and --stats gives the fingerprint the .h5 stores.
    j = locus("inspect", src, "--json").json()
    assert {t["name"] for t in j["tensors"]} == set(back)
    assert locus("inspect", src, "--stats", "--json").json()["fingerprint"] == expected
    assert_ok(locus("validate", bert / "base.h5"))
    assert "valid" in assert_ok(locus("validate", src)).out


def test_diff_apply_merge_read_folders_in_place(locus, bert):
    # τ made against the folders applies to the .h5 (same fingerprint), and back.
    assert_ok(locus("convert", bert / "base", bert / "b.h5"))
    assert_ok(locus("diff", bert / "base", bert / "ft", "-o", bert / "tau.h5"))
    assert_ok(locus("apply", bert / "b.h5", bert / "tau.h5", "-o", bert / "applied.h5"))
    assert spec_fingerprint(bert / "applied.h5") == st_fingerprint(folder_tensors(bert / "ft"))
    # Apply straight onto the folder, writing a folder: loads in transformers as the fine-tuned model.
    assert_ok(locus("apply", bert / "base", bert / "tau.h5", "-o", f"{bert}/applied/", "--shard-size", "150KB"))
    shutil.copy(bert / "base" / "config.json", bert / "applied" / "config.json")
    got = transformers.AutoModel.from_pretrained(bert / "applied").state_dict()
    want = transformers.AutoModel.from_pretrained(bert / "ft").state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # A folder base is fingerprinted on the way through apply's one pass: another base is still
    # refused before anything is published, and --force applies with a warning.
    r = locus("apply", bert / "ft", bert / "tau.h5", "-o", bert / "wrong.h5")
    assert_error(r, bert / "tau.h5", "base-fingerprint")
    assert not (bert / "wrong.h5").exists() and not [p for p in bert.iterdir() if p.name.startswith(".wrong")]
    r = assert_ok(locus("apply", bert / "ft", bert / "tau.h5", "-o", bert / "wrong.h5", "--force"))
    assert "different base" in r.err and (bert / "wrong.h5").exists()
    # Merge reads the folder base in place and writes .h5 or a folder.
    assert_ok(locus("merge", bert / "base", bert / "tau.h5", "--lambda", "0.5", "-o", bert / "merged.h5"))
    assert_ok(locus("merge", bert / "base", bert / "tau.h5", "--lambda", "0.5", "-o", bert / "merged", "--format", "hf"))
    assert st_fingerprint(folder_tensors(bert / "merged")) == spec_fingerprint(bert / "merged.h5")
    merged = {}
    for f in (bert / "merged").glob("*.safetensors"):
        merged.update(load_file(str(f)))
    base = {}
    for f in (bert / "base").glob("*.safetensors"):
        base.update(load_file(str(f)))
    ft = {}
    for f in (bert / "ft").glob("*.safetensors"):
        ft.update(load_file(str(f)))
    for k in base:
        want_k = (base[k].double() + 0.5 * (ft[k].double() - base[k].double())).float()
        assert torch.allclose(merged[k], want_k, atol=1e-6), k


def test_locus_folders_load_in_safetensors_and_transformers(locus, bert, tmp_path):
    assert_ok(locus("convert", bert / "base", tmp_path / "m.h5"))
    out = tmp_path / "hf"
    r = assert_ok(locus("convert", tmp_path / "m.h5", f"{out}/", "--shard-size", "100KB", "--config-from", bert / "base"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors", shards
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_size"] == sum(len(t[2]) for t in folder_tensors(out).values())
    assert (out / "config.json").read_bytes() == (bert / "base" / "config.json").read_bytes()
    for s in shards:   # each shard is a plain safetensors file transformers accepts (format pt)
        assert load_file(str(out / s))
        assert st_read(out / s)[0]["format"] == "pt"
    got = transformers.AutoModel.from_pretrained(out).state_dict()
    want = transformers.AutoModel.from_pretrained(bert / "base").state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert r.out.strip().endswith(spec_fingerprint(tmp_path / "m.h5"))
    # Small enough for one shard: a single model.safetensors, like transformers.
    assert_ok(locus("convert", tmp_path / "m.h5", f"{tmp_path}/one/"))
    assert sorted(os.listdir(tmp_path / "one")) == ["model.safetensors"]
    # --dtype bfloat16: every float tensor converted with one rounding, as torch rounds.
    assert_ok(locus("convert", tmp_path / "m.h5", f"{tmp_path}/bf/", "--dtype", "bfloat16"))
    bf = load_file(str(tmp_path / "bf" / "model.safetensors"))
    for k, v in want.items():
        assert bf[k].dtype == torch.bfloat16 and torch.equal(bf[k], v.to(torch.bfloat16)), k


def test_safetensors_written_folder_and_replacing_a_folder(locus, tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"layer.{i}.weight": torch.from_numpy(rng.standard_normal((16, 8)).astype(np.float32)) for i in range(4)}
    tensors["bf"] = torch.randn(5, 3).to(torch.bfloat16)
    d = tmp_path / "st"
    d.mkdir()
    names = sorted(tensors)
    shards = {"a.safetensors": names[:2], "b.safetensors": names[2:]}
    for f, ns in shards.items():
        save_file({n: tensors[n] for n in ns}, str(d / f), metadata={"format": "pt"})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {n: f for f, ns in shards.items() for n in ns}}))
    assert_ok(locus("convert", d, tmp_path / "st.h5"))
    assert spec_fingerprint(tmp_path / "st.h5") == st_fingerprint(folder_tensors(d))
    # An existing output folder is replaced as a whole; nothing else is left beside it.
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    before = snapshot(tmp_path)
    assert_ok(locus("convert", tmp_path / "st.h5", out))
    assert sorted(os.listdir(out)) == ["model.safetensors"]
    assert snapshot(tmp_path) == before
    back = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def write_folder(d, tensors_by_shard, weight_map=None):
    d.mkdir()
    wm = {}
    for f, ts in tensors_by_shard.items():
        save_file(ts, str(d / f), metadata={"format": "pt"})
        wm.update({n: f for n in ts})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map or wm}))


@pytest.mark.parametrize("case", ["missing-shard", "twice", "unlisted", "outside", "absolute", "truncated", "f8"])
def test_bad_folders_fail_with_one_line_and_write_nothing(locus, tmp_path, case):
    a, b = {"x": torch.ones(4, 4)}, {"y": torch.zeros(3)}
    d = tmp_path / "bad"
    expect_file, expect_obj = "model.safetensors.index.json", None
    if case == "missing-shard":
        write_folder(d, {"s1.safetensors": a, "s2.safetensors": b})
        os.remove(d / "s2.safetensors")
        expect_obj = "s2.safetensors"
    elif case == "twice":
        write_folder(d, {"s1.safetensors": a, "s2.safetensors": {**a, **b}}, {"x": "s1.safetensors", "y": "s2.safetensors"})
        expect_file, expect_obj = "s2.safetensors", "x"
    elif case == "unlisted":
        write_folder(d, {"s1.safetensors": {**a, **b}}, {"x": "s1.safetensors"})
        expect_file, expect_obj = "s1.safetensors", "y"
    elif case == "outside":
        write_folder(d, {"s1.safetensors": a}, {"x": "../s1.safetensors"})
        expect_obj = "../s1.safetensors"
    elif case == "absolute":
        write_folder(d, {"s1.safetensors": a}, {"x": "/tmp/s1.safetensors"})
        expect_obj = "/tmp/s1.safetensors"
    elif case == "truncated":
        write_folder(d, {"s1.safetensors": a, "s2.safetensors": b})
        blob = (d / "s1.safetensors").read_bytes()
        (d / "s1.safetensors").write_bytes(blob[:-5])
        expect_file, expect_obj = "s1.safetensors", "x"
    elif case == "f8":
        write_folder(d, {"s1.safetensors": {"q": torch.zeros(2, dtype=torch.float8_e4m3fn)}})
        expect_file, expect_obj = "s1.safetensors", "q"
    before = snapshot(tmp_path)
    for args in (["convert", d, tmp_path / "o.h5"], ["convert", d, f"{tmp_path}/o/"], ["inspect", d],
                 ["diff", d, d, "-o", tmp_path / "t.h5"]):
        line = assert_error(locus(*args), expect_file)
        if expect_obj:
            assert expect_obj in line, line
        assert snapshot(tmp_path) == before
    assert_invalid(locus("validate", d), expect_file)


def test_open_clip_visual_renamed_to_timm(locus, tmp_path):
    import open_clip
    import timm.models.vision_transformer as timm_vit
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=16,
                           vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
                           text_cfg=open_clip.model.CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=2, layers=1))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "clip.safetensors"))
    r = assert_ok(locus("convert", tmp_path / "clip.safetensors", tmp_path / "vit.h5",
                        "--strip-prefix", "visual.", "--rename", "open_clip-to-timm"))
    dropped = sum(not k.startswith("visual.") for k in sd)
    assert f"dropped {dropped} tensor" in r.err, r
    assert_ok(locus("convert", tmp_path / "vit.h5", tmp_path / "vit.safetensors"))
    got = load_file(str(tmp_path / "vit.safetensors"))
    # timm's own open_clip converter is the reference, except that Locus keeps `proj` [D, E] as it is
    # (timm turns it into a transposed classifier head).
    ref = timm_vit._convert_openai_clip(sd, None)
    ref.pop("head.bias")
    ref["proj"] = ref.pop("head.weight").t()
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].shape == ref[k].shape and torch.equal(got[k], ref[k]), k
    # A timm VisionTransformer of the same shape loads the renamed tensors strictly.
    vit = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pre_norm=True, num_classes=0)
    vit.load_state_dict({k: v for k, v in got.items() if k != "proj"}, strict=True)
    # The renaming is recorded in provenance, and timm-to-open_clip undoes it on export.
    prov = locus("inspect", tmp_path / "vit.h5", "--json").json()["provenance"]
    assert prov["parameters"]["source-renaming"] == {"strip-prefix": "visual.", "table": "open_clip-to-timm"}
    assert_ok(locus("convert", tmp_path / "vit.h5", f"{tmp_path}/oc/", "--rename", "timm-to-open_clip"))
    back = load_file(str(tmp_path / "oc" / "model.safetensors"))
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    assert set(back) == set(visual) and all(torch.equal(back[k], visual[k]) for k in visual)
    # In place: inspect reads the open_clip file through the renaming without converting it.
    j = locus("inspect", tmp_path / "clip.safetensors", "--strip-prefix", "visual.", "--rename", "open_clip-to-timm", "--json").json()
    assert {t["name"]: t["shape"] for t in j["tensors"]} == {k: list(v.shape) for k, v in ref.items()}


def test_rename_rules_file_and_collisions(locus, tmp_path):
    save_file({"enc.layer.0.w": torch.ones(2), "enc.layer.1.w": torch.zeros(2), "head": torch.ones(3)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "rules.txt").write_text("# rules\nenc\\.layer\\.(\\d+)\\.w → blocks.$1.weight\n")
    assert_ok(locus("convert", tmp_path / "m.safetensors", tmp_path / "r.h5", "--rename-rules", tmp_path / "rules.txt"))
    names = {t["name"] for t in locus("inspect", tmp_path / "r.h5", "--json").json()["tensors"]}
    assert names == {"blocks.0.weight", "blocks.1.weight", "head"}
    (tmp_path / "clash.txt").write_text("enc\\.layer\\.\\d+\\.w → same\n")
    (tmp_path / "badrule.txt").write_text("ok → fine\n(unclosed → x\n")
    before = snapshot(tmp_path)
    line = assert_error(locus("convert", tmp_path / "m.safetensors", tmp_path / "c.h5", "--rename-rules", tmp_path / "clash.txt"),
                        "m.safetensors")
    assert "enc.layer.0.w" in line and "enc.layer.1.w" in line, line
    line = assert_error(locus("convert", tmp_path / "m.safetensors", tmp_path / "c.h5", "--rename-rules", tmp_path / "badrule.txt"),
                        "badrule.txt")
    assert "line 2" in line
    assert snapshot(tmp_path) == before
    # validate opens a checkpoint as the other commands do: a renaming that collides is an
    # error there too, a bad rules file one line naming it, and a good one passes.
    assert "valid" in assert_ok(locus("validate", tmp_path / "m.safetensors", "--rename-rules", tmp_path / "rules.txt")).out
    r = locus("validate", tmp_path / "m.safetensors", "--rename-rules", tmp_path / "clash.txt")
    assert r.code == 1 and "enc.layer.0.w" in r.out + r.err
    assert_error(locus("validate", tmp_path / "m.safetensors", "--rename-rules", tmp_path / "badrule.txt"), "badrule.txt")


# ------------------------------------------------------------------ PyTorch files, read in place

def test_torch_bin_files_and_folders_read_in_place(locus, bert, tmp_path):
    model = transformers.AutoModel.from_pretrained(bert / "base")
    sd = model.state_dict()
    folder_fp = st_fingerprint(folder_tensors(bert / "base"))
    torch.save(sd, tmp_path / "model.bin")
    torch.save({"epoch": 3, "state_dict": sd, "optimizer": {"lr": 0.1}}, tmp_path / "nested.pt")
    # A sharded pytorch_model.bin folder as transformers 4 wrote them (transformers 5 writes only safetensors).
    binfolder = tmp_path / "binfolder"
    binfolder.mkdir()
    names = sorted(sd)
    parts = [names[i::3] for i in range(3)]
    weight_map = {}
    for i, part in enumerate(parts):
        file = f"pytorch_model-{i + 1:05d}-of-00003.bin"
        torch.save({k: sd[k] for k in part}, binfolder / file)
        weight_map.update({k: file for k in part})
    (binfolder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    # Same tensors, same fingerprint, whichever container holds them.
    for src, extra in [(tmp_path / "model.bin", []), (tmp_path / "nested.pt", ["--key", "state_dict"]), (tmp_path / "binfolder", [])]:
        assert locus("inspect", src, "--stats", "--json", *extra).json()["fingerprint"] == folder_fp, src
        out = tmp_path / (src.stem + ".h5")
        assert_ok(locus("convert", src, out, *extra))
        assert spec_fingerprint(out) == folder_fp
    # Bit-exact: export the .h5 made from the .bin and compare with torch's tensors.
    assert_ok(locus("convert", tmp_path / "model.h5", tmp_path / "model.safetensors"))
    back = load_file(str(tmp_path / "model.safetensors"))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    # diff a .bin against a folder, apply to the .h5 of the base: the fine-tuned weights come back.
    assert_ok(locus("diff", tmp_path / "model.bin", bert / "ft", "-o", tmp_path / "tau.h5"))
    assert_ok(locus("apply", tmp_path / "model.h5", tmp_path / "tau.h5", "-o", tmp_path / "ft.h5"))
    assert spec_fingerprint(tmp_path / "ft.h5") == st_fingerprint(folder_tensors(bert / "ft"))


def test_torch_bad_inputs_fail_cleanly(locus, tmp_path):
    sd = {"w": torch.ones(3, 2), "b": torch.zeros(2)}
    torch.save({"a": sd, "b": {"x": torch.ones(1)}}, tmp_path / "two.pt")
    torch.save(sd, tmp_path / "ok.pt")
    blob = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    before = snapshot(tmp_path)
    assert_error(locus("convert", tmp_path / "two.pt", tmp_path / "o.h5"), "two.pt")          # which dict? needs --key
    assert_error(locus("convert", tmp_path / "two.pt", tmp_path / "o.h5", "--key", "c"), "two.pt")
    assert_error(locus("convert", tmp_path / "cut.pt", tmp_path / "o.h5"), "cut.pt")
    assert_error(locus("convert", tmp_path / "ok.pt", tmp_path / "o.h5", "--key", "x"), "ok.pt")
    assert snapshot(tmp_path) == before
    assert_ok(locus("convert", tmp_path / "two.pt", tmp_path / "o.h5", "--key", "a"))


def test_engine_commands_run_a_folder_locus_wrote(locus, tmp_path):
    # The model description travels in the folder's metadata, so eval runs the folder in place.
    import locus_h5   # interop/python, on the path through conftest
    rng = np.random.default_rng(4)
    x = rng.random((12, 1, 4, 4)).astype(np.float32)
    y = np.arange(12) % 3
    data = tmp_path / "d.h5"
    locus_h5.write_dataset(data, x, y, ["a", "b", "c"], {"train": np.arange(8), "test": np.arange(8, 12)})
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "8", "--data", data, "--head", "t", "-o", tmp_path / "m.h5"))
    assert_ok(locus("convert", tmp_path / "m.h5", f"{tmp_path}/hf/"))
    a = locus("eval", tmp_path / "m.h5", data, "--json").json()
    b = locus("eval", tmp_path / "hf", data, "--json").json()
    assert a == b
    # A folder without a description says what is missing.
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    assert_error(locus("eval", tmp_path / "plain.safetensors", data), "plain.safetensors")
