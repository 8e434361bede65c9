"""open_clip's image tower (OpenAI CLIP and LAION layouts) through the CLI, against open_clip itself.

A small open_clip `CLIP` (width 64, 2 blocks of 2 heads, patch 8 on 32×32 images, embed_dim 32) with
random weights, built with quick_gelu=True (OpenAI's QuickGELU) and False (exact GELU). Its `visual.`
state dict is renamed to Locus's names here (docs/clip.md), the class prompts are encoded by the
model's own text tower, and the checkpoint is imported with `locus convert --architecture`. Checked:
zero-shot logits against open_clip's `logit_scale.exp() · normalize(image) · normalize(text)ᵀ`, per-sample
`talos-exact` scores against torch autograd per sample (float64), and that sparse fine-tuning, diff
and validate leave the fixed zero-shot head out.
"""
import numpy as np
import pytest

import locus_h5
from conftest import assert_error, assert_ok, assert_valid
from test_engine import _inputs

# `make deps` installs both; a missing one is a failure, never a skip.
import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CLASSES = ["cat", "dog", "car"]
PROMPTS = [f"a photo of a {c}." for c in CLASSES]
HEAD = "zs"


def rename(visual_state):
    """open_clip `visual.` tensors → Locus (timm) names, as docs/clip.md does it."""
    rules = [("conv1.weight", "patch_embed.proj.weight"), ("ln_pre.", "norm_pre."), ("ln_post.", "norm."), (".ln_1.", ".norm1."),
             (".ln_2.", ".norm2."), (".attn.in_proj_weight", ".attn.qkv.weight"), (".attn.in_proj_bias", ".attn.qkv.bias"),
             (".attn.out_proj.", ".attn.proj."), (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2."),
             ("transformer.resblocks.", "blocks.")]

    def name(k):
        for a, b in rules:
            k = k.replace(a, b)
        return k
    out = {name(k): v for k, v in visual_state.items() if k not in ("class_embedding", "positional_embedding")}
    out["cls_token"] = visual_state["class_embedding"].reshape(1, 1, -1)
    out["pos_embed"] = visual_state["positional_embedding"].unsqueeze(0)
    return out


def build(quick_gelu, seed):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(seed)
    m = CLIP(embed_dim=32, quick_gelu=quick_gelu,
             vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
             text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1)).eval()
    with torch.no_grad():   # LayerNorms away from their 1/0 init, and a scale other than the default
        for mod in m.visual.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.3, 0.3)
        m.logit_scale.fill_(np.log(30.0))
    return m


@pytest.fixture(scope="module", params=[True, False], ids=["quick_gelu", "gelu"])
def clip(request, tmp_path_factory, locus_bin):
    import subprocess
    quick = request.param
    d = tmp_path_factory.mktemp("clip")
    m = build(quick, seed=1 if quick else 2)
    tok = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():   # docs/clip.md's export of the class embeddings
        text = F.normalize(m.encode_text(tok(PROMPTS)), dim=-1).numpy().astype(np.float32)
    np.save(d / "text.npy", text)

    rng = np.random.default_rng(3)
    n = 12
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = np.arange(n) % 3
    data = d / "img.h5"
    locus_h5.write_dataset(data, x, y, CLASSES, {"train": np.arange(9), "test": np.arange(9, 12)}, scale=1.0)

    def locus(*args):
        p = subprocess.run([str(locus_bin), *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"locus {' '.join(map(str, args))}\n{p.stderr}"
        return p
    arch = d / "arch.h5"
    locus("init", "--preset", "vit", "--input", "3,32,32", "--patch-size", "8", "--width", "64", "--depth", "2", "--num-heads", "2",
          "--activation", "quick_gelu" if quick else "gelu", "--no-patch-bias", "--norm-pre", "--eps", "1e-5", "--proj-dim", "32",
          "--head", HEAD, "--text-embeddings", d / "text.npy", "--logit-scale", "30", "-o", arch)
    state = rename({k: v.detach() for k, v in m.visual.state_dict().items()})
    state[f"heads.{HEAD}.text_embeddings"] = torch.from_numpy(text)
    state[f"heads.{HEAD}.logit_scale"] = m.logit_scale.detach().clone()
    import safetensors.torch
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(d / "clip.safetensors"))
    model = d / "clip.h5"
    locus("convert", d / "clip.safetensors", model, "--architecture", arch)
    return {"dir": d, "torch": m, "model": model, "arch": arch, "data": data, "text": text, "tokenizer": tok, "quick": quick}


def test_layout_and_init_options(locus, clip):
    assert_valid(locus("validate", clip["model"]))
    ck = locus_h5.load(clip["model"])
    t, arch = ck["tensors"], ck["architecture"]
    assert "patch_embed.proj.bias" not in t, "CLIP's conv1 has no bias, and no zero tensor stands in for it"
    assert t["proj"].shape == (64, 32) and t[f"heads.{HEAD}.text_embeddings"].shape == (3, 32)
    assert t[f"heads.{HEAD}.logit_scale"].shape == ()
    blocks = [layer for layer in arch["layers"] if layer["type"] == "vit_block"]
    assert all(b.get("act_layer", "gelu") == ("quick_gelu" if clip["quick"] else "gelu") for b in blocks)
    assert arch["heads"][0]["type"] == "zero_shot"
    # --text-embeddings put the .npy rows into the description file, and --logit-scale its logarithm.
    a = locus_h5.load(clip["arch"])["tensors"]
    np.testing.assert_array_equal(a[f"heads.{HEAD}.text_embeddings"], clip["text"])
    assert abs(float(a[f"heads.{HEAD}.logit_scale"]) - np.log(30.0)) < 1e-6


def test_zero_shot_logits_match_open_clip(locus, clip, tmp_path):
    x, _ = _inputs(clip["data"], "train")
    out = tmp_path / "logits.npy"
    assert_ok(locus("eval", clip["model"], clip["data"], "--split", "train", "--head", HEAD, "--logits", out, "--batch-size", "5"))
    got = np.load(out)
    m = clip["torch"].double()
    try:
        with torch.no_grad():
            img = m.encode_image(torch.from_numpy(x).double())
            text = m.encode_text(clip["tokenizer"](PROMPTS))     # the text tower again, not the stored rows
            ref = (m.logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(text, dim=-1).T).numpy()
    finally:
        clip["torch"].float()
    e = np.abs(got - ref).max() / np.abs(ref).max()
    assert e <= 1e-5, f"zero-shot logits differ from open_clip's by {e} (relative)"
    print(f"clip ({'quick_gelu' if clip['quick'] else 'gelu'}) zero-shot logits vs open_clip: relative error {e:.2e}")


def test_talos_exact_scores_match_open_clip_per_sample_gradients(locus, clip, tmp_path):
    """Σ_n Σ_c p_c (∂z_c/∂θ)² of the image encoder, z the zero-shot logits, per sample with torch autograd (float64)."""
    out = tmp_path / "scores.h5"
    assert_ok(locus("score", clip["model"], clip["data"], "--head", HEAD, "--estimator", "talos-exact", "--batch-size", "4",
                    "--quiet", "-o", out))
    assert_valid(locus("validate", out))
    got = locus_h5.load(out)["tensors"]
    m = clip["torch"].double()
    try:
        with torch.no_grad():
            text = F.normalize(m.encode_text(clip["tokenizer"](PROMPTS)), dim=-1)
        params = dict(m.visual.named_parameters())
        locus_names = dict(zip(rename({k: v.detach() for k, v in params.items()}).keys(), [None] * len(params)))
        assert set(got) == set(locus_names), "every image-encoder tensor is scored (proj too), never the zero-shot head"
        x, _ = _inputs(clip["data"], "train")
        ref = {k: torch.zeros_like(v) for k, v in params.items()}
        for n in range(len(x)):
            f = m.encode_image(torch.from_numpy(x[n:n + 1]).double())[0]
            z = m.logit_scale.exp().detach() * F.normalize(f, dim=-1) @ text.T
            p = torch.softmax(z, 0).detach()
            for c in range(len(CLASSES)):
                g = torch.autograd.grad(z[c], list(params.values()), retain_graph=True)
                for k, gk in zip(params, g):
                    ref[k] += p[c] * gk ** 2
    finally:
        clip["torch"].float()
    ref = rename(ref)
    worst = 0.0
    for k, v in got.items():
        r = ref[k].numpy().reshape(v.shape)
        e = np.abs(v - r).max() / max(np.abs(r).max(), 1e-30)
        worst = max(worst, e)
        assert e <= 1e-5, f"{k}: talos-exact scores differ from open_clip per-sample gradients by {e}"
    print(f"clip ({'quick_gelu' if clip['quick'] else 'gelu'}) talos-exact scores vs torch per-sample: worst {worst:.2e}")


def test_finetune_leaves_the_zero_shot_head_fixed(locus, clip, tmp_path):
    base, data = clip["model"], clip["data"]
    mask = tmp_path / "mask.h5"
    assert_ok(locus("mask", base, data, "--head", HEAD, "--density", "0.2", "--quiet", "-o", mask))
    assert_valid(locus("validate", mask))
    assert not any(k.startswith("heads.") for k in locus_h5.load(mask)["tensors"]), "the head is not in the mask"
    ft, tv = tmp_path / "ft.h5", tmp_path / "tv.h5"
    assert_ok(locus("finetune", base, data, "--mask", mask, "--head", HEAD, "--epochs", "1", "--batch-size", "4", "--lr", "0.01",
                    "--optimizer", "sgd", "--quiet", "-o", ft, "--task-vector", tv))
    assert_valid(locus("validate", ft)); assert_valid(locus("validate", tv))
    b, f = locus_h5.load(base)["tensors"], locus_h5.load(ft)["tensors"]
    for k in (f"heads.{HEAD}.text_embeddings", f"heads.{HEAD}.logit_scale"):
        assert np.array_equal(b[k].view(np.uint32), f[k].view(np.uint32)), f"{k} changed in fine-tuning"
    assert any(not np.array_equal(b[k], f[k]) for k in b), "fine-tuning changed nothing"
    tau = locus_h5.load(tv)["tensors"]
    assert tau and not any(k.startswith("heads.") for k in tau), "the task vector covers the image encoder only"
    # A second task vector (another learning rate), then a merge: the merged model keeps the base's head.
    ft2, tv2 = tmp_path / "ft2.h5", tmp_path / "tv2.h5"
    assert_ok(locus("finetune", base, data, "--mask", mask, "--head", HEAD, "--epochs", "1", "--batch-size", "4", "--lr", "0.02",
                    "--optimizer", "sgd", "--quiet", "-o", ft2, "--task-vector", tv2))
    merged = tmp_path / "merged.h5"
    assert_ok(locus("merge", base, tv, tv2, "-o", merged, "--method", "task-arithmetic", "--lambda", "0.5"))
    assert_valid(locus("validate", merged))
    mt = locus_h5.load(merged)["tensors"]
    for k in (f"heads.{HEAD}.text_embeddings", f"heads.{HEAD}.logit_scale"):
        assert np.array_equal(b[k].view(np.uint32), mt[k].view(np.uint32)), f"{k} changed in merging"
    assert locus("eval", merged, data, "--head", HEAD, "--split", "test", "--json").json()[0]["samples"] == 3
    r = locus("finetune", base, data, "--mask", mask, "--head", HEAD, "--train-head", "--quiet", "-o", tmp_path / "no.h5")
    assert_error(r, base)
    assert "zero-shot" in r.err and not (tmp_path / "no.h5").exists()
    r = locus("train", base, data, "--head", HEAD, "--linear-probe", "--quiet", "-o", tmp_path / "no.h5")
    assert_error(r, base)
    assert "zero-shot" in r.err and not (tmp_path / "no.h5").exists()
    # Dense training trains the image encoder only.
    assert_ok(locus("train", base, data, "--head", HEAD, "--epochs", "1", "--batch-size", "4", "--lr", "0.01", "--optimizer", "sgd",
                    "--quiet", "-o", tmp_path / "dense.h5"))
    d = locus_h5.load(tmp_path / "dense.h5")["tensors"]
    for k in (f"heads.{HEAD}.text_embeddings", f"heads.{HEAD}.logit_scale"):
        assert np.array_equal(b[k].view(np.uint32), d[k].view(np.uint32)), f"{k} changed in dense training"


def test_bad_text_embeddings_are_refused(locus, clip, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 31), np.float32))
    out = tmp_path / "x.h5"
    common = ["init", "--preset", "vit", "--input", "3,32,32", "--patch-size", "8", "--width", "64", "--depth", "1",
              "--num-heads", "2", "--proj-dim", "32", "-o", out]
    r = locus(*common, "--text-embeddings", tmp_path / "wide.npy")
    assert_error(r, tmp_path / "wide.npy"); assert "width 31" in r.err and not out.exists()
    r = locus(*common, "--text-embeddings", tmp_path / "wide.npy", "--classes", "4")
    assert_error(r, tmp_path / "wide.npy"); assert "4 classes" in r.err
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00\xff\xff{'descr'")
    assert_error(locus(*common, "--text-embeddings", tmp_path / "junk.npy"), tmp_path / "junk.npy")
    np.save(tmp_path / "ints.npy", np.zeros((3, 32), np.int64))
    r = locus(*common, "--text-embeddings", tmp_path / "ints.npy")
    assert_error(r, tmp_path / "ints.npy"); assert "<i8" in r.err


def test_validate_checks_the_clip_tensors(locus, clip, tmp_path):
    ck = locus_h5.load(clip["model"])
    t = dict(ck["tensors"])
    del t["proj"]
    bad = tmp_path / "no-proj.h5"
    locus_h5.write_checkpoint(bad, t, architecture=ck["architecture"])
    r = locus("validate", bad)
    assert r.code != 0 and "proj" in r.out and "[64, 32]" in r.out, r
    t = dict(ck["tensors"])
    t[f"heads.{HEAD}.logit_scale"] = np.array([np.log(100.0)], np.float32)    # [1], not a scalar
    bad = tmp_path / "scale-shape.h5"
    locus_h5.write_checkpoint(bad, t, architecture=ck["architecture"])
    r = locus("validate", bad)
    assert r.code != 0 and "logit_scale" in r.out and "[1]" in r.out, r
    arch = dict(ck["architecture"])
    arch["heads"] = [dict(arch["heads"][0], type="cosine")]
    bad = tmp_path / "head-type.h5"
    locus_h5.write_checkpoint(bad, ck["tensors"], architecture=arch)
    r = locus("validate", bad)
    assert r.code != 0 and "cosine" in r.out, r


def test_spec_only_fixture_matches_open_clip(locus, tmp_path):
    """fixtures/h5py/clip_checkpoint.h5, written from spec/FORMAT.md alone (1.3: bias-free patch embedding, norm_pre,
    QuickGELU, proj, a zero-shot head with a scalar logit_scale), evaluates to open_clip's zero-shot logits."""
    from conftest import FIXTURES
    from open_clip.model import QuickGELU
    from open_clip.transformer import VisionTransformer
    fx = FIXTURES / "clip_checkpoint.h5"
    assert_valid(locus("validate", fx))
    ck = locus_h5.load(fx)
    t = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in ck["tensors"].items()}
    vis = VisionTransformer(image_size=8, patch_size=4, width=8, layers=2, heads=2, mlp_ratio=2.0, output_dim=6,
                            act_layer=QuickGELU).double().eval()
    back = {"class_embedding": t["cls_token"].reshape(-1), "positional_embedding": t["pos_embed"][0]}
    inverse = [("patch_embed.proj.weight", "conv1.weight"), ("norm_pre.", "ln_pre."), ("blocks.", "transformer.resblocks."),
               (".norm1.", ".ln_1."), (".norm2.", ".ln_2."), (".attn.qkv.weight", ".attn.in_proj_weight"),
               (".attn.qkv.bias", ".attn.in_proj_bias"), (".attn.proj.", ".attn.out_proj."), (".mlp.fc1.", ".mlp.c_fc."),
               (".mlp.fc2.", ".mlp.c_proj.")]
    for k, v in t.items():
        if k in ("cls_token", "pos_embed") or k.startswith("heads."):
            continue
        name = "ln_post." + k[len("norm."):] if k.startswith("norm.") else k
        for a, b in inverse:
            name = name.replace(a, b)
        back[name] = v
    vis.load_state_dict(back, strict=True)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    data = tmp_path / "d.h5"
    locus_h5.write_dataset(data, x, np.arange(5) % 3, ["circle", "square", "line"], {"test": np.arange(5)}, scale=1.0)
    out = tmp_path / "z.npy"
    assert_ok(locus("eval", fx, data, "--head", "shapes", "--logits", out))
    with torch.no_grad():
        f = vis(torch.from_numpy(x).double())
        ref = (t["heads.shapes.logit_scale"].exp() * F.normalize(f, dim=-1) @ F.normalize(t["heads.shapes.text_embeddings"], dim=-1).T).numpy()
    z = np.load(out)
    assert np.abs(z - ref).max() / np.abs(ref).max() <= 1e-5


def test_open_clip_state_dict_through_the_builtin_renaming(locus, tmp_path):
    """The whole path a user takes with no renaming script: open_clip's `visual.` tensors (plus the
    head's two tensors) saved as they are, then `convert --strip-prefix visual. --rename
    open_clip-to-timm --architecture`; Locus's zero-shot logits equal open_clip's."""
    import safetensors.torch as st
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(3)
    m = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
             text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1), quick_gelu=True).eval()
    sd = {k: v for k, v in m.state_dict().items() if k.startswith("visual.")}
    text = F.normalize(torch.randn(3, 32), dim=-1)
    sd["visual.heads.zs.text_embeddings"] = text
    sd["visual.heads.zs.logit_scale"] = m.logit_scale.detach().clone()
    st.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "clip_visual.safetensors"))
    np.save(tmp_path / "text.npy", text.numpy().astype("float32"))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = (m.logit_scale.exp() * F.normalize(m.encode_image(x), dim=-1) @ text.T).numpy()
    locus_h5.write_dataset(tmp_path / "data.h5", x.numpy(), np.array([0, 1, 2, 0, 1]), ["a", "b", "c"], {"test": np.arange(5)})
    assert_ok(locus("init", "--preset", "vit", "--input", "3,32,32", "--patch-size", "8", "--width", "64", "--depth", "2",
                    "--num-heads", "2", "--activation", "quick_gelu", "--no-patch-bias", "--norm-pre", "--eps", "1e-5",
                    "--proj-dim", "32", "--head", "zs", "--text-embeddings", tmp_path / "text.npy", "-o", tmp_path / "arch.h5"))
    assert_ok(locus("convert", tmp_path / "clip_visual.safetensors", tmp_path / "clip.h5", "--strip-prefix", "visual.",
                    "--rename", "open_clip-to-timm", "--architecture", tmp_path / "arch.h5"))
    assert_valid(locus("validate", tmp_path / "clip.h5"))
    assert_ok(locus("eval", tmp_path / "clip.h5", tmp_path / "data.h5", "--head", "zs", "--logits", tmp_path / "logits.npy"))
    got = np.load(tmp_path / "logits.npy")
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
