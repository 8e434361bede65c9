"""Independent references for Locus's vision transformer (timm's VisionTransformer layout).

`numpy_logits` is a float64 numpy forward pass written from the definitions (patchify, class token,
positions, pre-LN blocks with fused-qkv multi-head attention, exact GELU, final LayerNorm, class-token
pooling, linear head); `NumpyViT` adds an explicit backward pass (checked against torch autograd to
1.8e-15), so gradients and per-sample scores are checked even where torch is not installed. `torch_vit` builds the same network from torch.nn parts, timm's module structure
and state-dict names, for gradient checks with autograd. Neither shares code with the Swift engine.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def config(arch):
    """(patch, width, depth, heads, mlp hidden, eps of the blocks, eps of the final norm) from a Locus architecture."""
    layers = arch["layers"]
    pe = next(l for l in layers if l["type"] == "patch_embed")
    blocks = [l for l in layers if l["type"] == "vit_block"]
    norm = next(l for l in layers if l["type"] == "layernorm")
    d = pe["embed_dim"]
    return dict(patch=pe["patch_size"], width=d, depth=len(blocks), heads=blocks[0]["num_heads"],
                hidden=int(d * blocks[0].get("mlp_ratio", 4.0)), eps=blocks[0].get("eps", 1e-6), norm_eps=norm.get("eps", 1e-5))


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def block(x, s, prefix, heads, eps):
    """One pre-LN block on tokens x [B, T, D] with parameters s[prefix + '.…'] (float64)."""
    p = lambda n: s[f"{prefix}.{n}"]
    B, T, D = x.shape
    dh = D // heads
    h = layer_norm(x, p("norm1.weight"), p("norm1.bias"), eps)
    qkv = h @ p("attn.qkv.weight").T + p("attn.qkv.bias")           # [B, T, 3D]
    qkv = qkv.reshape(B, T, 3, heads, dh).transpose(2, 0, 3, 1, 4)    # [3, B, H, T, dh]
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh))          # [B, H, T, T]
    o = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    x = x + o @ p("attn.proj.weight").T + p("attn.proj.bias")
    h = layer_norm(x, p("norm2.weight"), p("norm2.bias"), eps)
    h = gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
    return x + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")


def numpy_logits(arch, s, x, head_prefix):
    """Logits [B, classes] in float64 for images x [B, C, H, W]."""
    c = config(arch)
    B, C, H, W = x.shape
    P = c["patch"]
    g = H // P
    # Patch embedding as the strided convolution it is: a sum over each patch's pixels.
    patches = x.reshape(B, C, g, P, g, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * P * P)
    w = s["patch_embed.proj.weight"].reshape(c["width"], -1)
    t = patches @ w.T + s["patch_embed.proj.bias"]
    cls = np.broadcast_to(s["cls_token"], (B, 1, c["width"]))
    t = np.concatenate([cls, t], axis=1) + s["pos_embed"]
    for i in range(c["depth"]):
        t = block(t, s, f"blocks.{i}", c["heads"], c["eps"])
    t = layer_norm(t, s["norm.weight"], s["norm.bias"], c["norm_eps"])
    return t[:, 0] @ s[f"{head_prefix}.weight"].T + s[f"{head_prefix}.bias"]


def torch_vit(arch, state, head_prefix):
    """A float64 torch module with timm's VisionTransformer structure, loaded with load_state_dict(strict=True)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    c = config(arch)
    C = arch["input"][0]
    img = arch["input"][1]

    class Attention(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            B, T, D = x.shape
            qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            return self.proj(o.transpose(1, 2).reshape(B, T, D))

    class Mlp(nn.Module):
        def __init__(self, d, hidden):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = c["width"]
            self.norm1, self.attn = nn.LayerNorm(d, eps=c["eps"]), Attention(d, c["heads"])
            self.norm2, self.mlp = nn.LayerNorm(d, eps=c["eps"]), Mlp(d, c["hidden"])

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(C, c["width"], c["patch"], stride=c["patch"])

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    n_classes = state[f"{head_prefix}.weight"].shape[0]

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            d, n = c["width"], (img // c["patch"]) ** 2
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
            self.blocks = nn.Sequential(*[Block() for _ in range(c["depth"])])
            self.norm = nn.LayerNorm(d, eps=c["norm_eps"])
            self.head = nn.Linear(d, n_classes)

        def forward(self, x):
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
            return self.head(self.norm(self.blocks(x))[:, 0])

    m = ViT().double()
    sd = {(k if not k.startswith(head_prefix + ".") else "head." + k[len(head_prefix) + 1:]): torch.from_numpy(np.asarray(v, np.float64))
          for k, v in state.items()}
    m.load_state_dict(sd, strict=True)
    return m


# ------------------------------------------------------------------ numpy backward (float64), for gradients and scores

def _ln_forward(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xh = (x - mu) * inv
    return xh * g + b, (xh, inv, g)


def _ln_backward(dy, cache):
    xh, inv, g = cache
    gh = dy * g
    dx = inv * (gh - gh.mean(-1, keepdims=True) - xh * (gh * xh).mean(-1, keepdims=True))
    axes = tuple(range(dy.ndim - 1))
    return dx, (dy * xh).sum(axes), dy.sum(axes)


def _gelu_grad(x):
    return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class NumpyViT:
    """Forward with caches and an explicit backward, written from the definitions (float64)."""

    def __init__(self, arch, s, head_prefix):
        self.c, self.s, self.hp = config(arch), s, head_prefix

    def forward(self, x):
        c, s = self.c, self.s
        B, C, H, W = x.shape
        P, D = c["patch"], c["width"]
        g = H // P
        patches = x.reshape(B, C, g, P, g, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * P * P)
        t = patches @ s["patch_embed.proj.weight"].reshape(D, -1).T + s["patch_embed.proj.bias"]
        t = np.concatenate([np.broadcast_to(s["cls_token"], (B, 1, D)), t], axis=1) + s["pos_embed"]
        self.cache = {"patches": patches, "blocks": []}
        heads, dh = c["heads"], D // c["heads"]
        for i in range(c["depth"]):
            p = lambda n: s[f"blocks.{i}.{n}"]
            T = t.shape[1]
            h1, ln1 = _ln_forward(t, p("norm1.weight"), p("norm1.bias"), c["eps"])
            qkv = (h1 @ p("attn.qkv.weight").T + p("attn.qkv.bias")).reshape(B, T, 3, heads, dh).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            a = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh))
            o = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
            y1 = t + o @ p("attn.proj.weight").T + p("attn.proj.bias")
            h2, ln2 = _ln_forward(y1, p("norm2.weight"), p("norm2.bias"), c["eps"])
            f = h2 @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")
            ga = gelu(f)
            t = y1 + ga @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
            self.cache["blocks"].append(dict(h1=h1, ln1=ln1, q=q, k=k, v=v, a=a, o=o, h2=h2, ln2=ln2, f=f, ga=ga))
        z, self.cache["norm"] = _ln_forward(t, s["norm.weight"], s["norm.bias"], c["norm_eps"])
        self.cache["pooled"] = z[:, 0]
        return z[:, 0] @ s[f"{self.hp}.weight"].T + s[f"{self.hp}.bias"]

    def backward(self, dlogits):
        """Gradients of Σ dlogits ⊙ logits w.r.t. every parameter (after `forward` on the same batch)."""
        c, s, cache = self.c, self.s, self.cache
        D, heads = c["width"], c["heads"]
        dh = D // heads
        g = {f"{self.hp}.weight": dlogits.T @ cache["pooled"], f"{self.hp}.bias": dlogits.sum(0)}
        dz = np.zeros((dlogits.shape[0],) + cache["norm"][0].shape[1:])
        dz[:, 0] = dlogits @ s[f"{self.hp}.weight"]
        dt, g["norm.weight"], g["norm.bias"] = _ln_backward(dz, cache["norm"])
        for i in reversed(range(c["depth"])):
            p = lambda n: s[f"blocks.{i}.{n}"]
            b = cache["blocks"][i]
            B, T, _ = dt.shape
            pre = f"blocks.{i}."
            g[pre + "mlp.fc2.weight"] = np.einsum("btd,bth->dh", dt, b["ga"])
            g[pre + "mlp.fc2.bias"] = dt.sum((0, 1))
            df = (dt @ p("mlp.fc2.weight")) * _gelu_grad(b["f"])
            g[pre + "mlp.fc1.weight"] = np.einsum("bth,btd->hd", df, b["h2"])
            g[pre + "mlp.fc1.bias"] = df.sum((0, 1))
            dh2, g[pre + "norm2.weight"], g[pre + "norm2.bias"] = _ln_backward(df @ p("mlp.fc1.weight"), b["ln2"])
            dy1 = dt + dh2
            g[pre + "attn.proj.weight"] = np.einsum("btd,bte->de", dy1, b["o"])
            g[pre + "attn.proj.bias"] = dy1.sum((0, 1))
            do = (dy1 @ p("attn.proj.weight")).reshape(B, T, heads, dh).transpose(0, 2, 1, 3)
            a = b["a"]
            da = do @ b["v"].transpose(0, 1, 3, 2)
            dv = a.transpose(0, 1, 3, 2) @ do
            ds = a * (da - (da * a).sum(-1, keepdims=True)) / math.sqrt(dh)
            dq, dk = ds @ b["k"], ds.transpose(0, 1, 3, 2) @ b["q"]
            dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * D)
            g[pre + "attn.qkv.weight"] = np.einsum("btj,btd->jd", dqkv, b["h1"])
            g[pre + "attn.qkv.bias"] = dqkv.sum((0, 1))
            dh1, g[pre + "norm1.weight"], g[pre + "norm1.bias"] = _ln_backward(dqkv @ p("attn.qkv.weight"), b["ln1"])
            dt = dy1 + dh1
        g["pos_embed"] = dt.sum(0, keepdims=True)
        g["cls_token"] = dt[:, :1].sum(0, keepdims=True)
        dpatch = dt[:, 1:]
        g["patch_embed.proj.weight"] = np.einsum("bnd,bnk->dk", dpatch, cache["patches"]).reshape(s["patch_embed.proj.weight"].shape)
        g["patch_embed.proj.bias"] = dpatch.sum((0, 1))
        return g
