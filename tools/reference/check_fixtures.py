#!/usr/bin/env python3
"""Recompute the goldens from the files on disk alone, with a hand-written forward pass.

Reads tests/fixtures/tiny_openvla/{config.json, model.safetensors.index.json, shards, tokenizer.json,
preprocessor_config.json, dataset_statistics.json} and the frames, and reimplements everything from
docs/checkpoint_layout.md with plain tensor ops (no timm, no transformers, no torchvision, no model
classes): patch embedding as a matmul on unfolded patches, pre-norm ViT blocks, the fused projector,
a Llama with GQA + RoPE, greedy decoding by full recompute, OpenVLA's action decoding.

It runs twice, in float32 (what a Rust f32 implementation does) and float64 (to show the f32 noise
floor), compares every golden tensor and fails if a difference exceeds golden.json's tolerances.
An export mistake (a wrong tensor name, a transposed weight, a missing LayerScale, the wrong
feature layer, a wrong normalisation constant) shows up as an O(1) difference.

    tools/.venv/bin/python tools/reference/check_fixtures.py [--fixtures tests/fixtures]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ load

def load_checkpoint(ckpt: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg = json.loads((ckpt / "config.json").read_text())
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    total = 0
    for shard in sorted(set(index["weight_map"].values())):
        part = load_file(str(ckpt / shard))
        with safe_open(str(ckpt / shard), framework="pt") as f:
            assert set(f.keys()) == set(part)
        for name, t in part.items():
            assert index["weight_map"][name] == shard, f"{name} is in {shard}, index says {index['weight_map'][name]}"
            assert t.dtype == torch.bfloat16, (name, t.dtype)
            total += t.numel() * t.element_size()
            weights[name] = t
    assert set(weights) == set(index["weight_map"]), "index and shards disagree"
    assert total == index["metadata"]["total_size"], (total, index["metadata"]["total_size"])
    return cfg, weights


def cast(weights: dict[str, torch.Tensor], dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) for k, v in weights.items()}


# --------------------------------------------------------------------------------------- vision

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def vit_features(W: dict, prefix: str, t: dict, img: torch.Tensor) -> torch.Tensor:
    """img [3,S,S] -> patch tokens after block depth-2, no final norm, prefix tokens dropped: [P, D]."""
    D, p, S, nh = t["embed_dim"], t["patch_size"], t["image_size"], t["num_heads"]
    hd, eps, g = D // nh, t["layer_norm_eps"], t["image_size"] // t["patch_size"]
    w = lambda n: W[prefix + n]
    # patch embedding: conv(k=p, s=p) == matmul on (c, ky, kx)-flattened patches, row-major grid
    patches = img.reshape(3, g, p, g, p).permute(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)
    x = patches @ w("patch_embed.proj.weight").reshape(D, -1).T + w("patch_embed.proj.bias")
    assert w("pos_embed").shape == (1, g * g, D)
    x = x + w("pos_embed")[0]  # no_embed_class: patches only
    pre = []
    if t["class_token"]:
        pre.append(w("cls_token")[0])
    if t["num_register_tokens"]:
        assert w("reg_token").shape == (1, t["num_register_tokens"], D)
        pre.append(w("reg_token")[0])
    n_pre = sum(q.shape[0] for q in pre)
    x = torch.cat(pre + [x], dim=0)
    N = x.shape[0]
    for i in range(t["depth"] - 1):  # blocks 0 ..= depth-2
        b = f"blocks.{i}."
        y = layer_norm(x, w(b + "norm1.weight"), w(b + "norm1.bias"), eps)
        qkv = (y @ w(b + "attn.qkv.weight").T + w(b + "attn.qkv.bias")).reshape(N, 3, nh, hd).permute(1, 2, 0, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [nh, N, hd]
        a = torch.softmax(q @ k.transpose(1, 2) * hd ** -0.5, dim=-1) @ v
        a = a.permute(1, 0, 2).reshape(N, D) @ w(b + "attn.proj.weight").T + w(b + "attn.proj.bias")
        if t["layer_scale"]:
            a = a * w(b + "ls1.scale_factor")
        x = x + a
        y = layer_norm(x, w(b + "norm2.weight"), w(b + "norm2.bias"), eps)
        m = gelu(y @ w(b + "mlp.fc1.weight").T + w(b + "mlp.fc1.bias")) @ w(b + "mlp.fc2.weight").T + w(b + "mlp.fc2.bias")
        if t["layer_scale"]:
            m = m * w(b + "ls2.scale_factor")
        x = x + m
    return x[n_pre:]


def projector(W: dict, x):
    l = lambda n, z: z @ W[f"projector.{n}.weight"].T + W[f"projector.{n}.bias"]
    return l("fc3", gelu(l("fc2", gelu(l("fc1", x)))))


# ------------------------------------------------------------------------------------------ llm

def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def llama(W: dict, tc: dict, emb: torch.Tensor):
    """emb [T,H] -> (post-norm hidden [T,H], logits [T,vocab]); positions 0..T-1, causal."""
    T, H = emb.shape
    nh, nkv, L = tc["num_attention_heads"], tc["num_key_value_heads"], tc["num_hidden_layers"]
    hd, eps, theta = H // nh, tc["rms_norm_eps"], tc["rope_theta"]
    dt = emb.dtype
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    cos, sin = ang.cos().to(dt)[:, None], ang.sin().to(dt)[:, None]  # [T,1,hd]
    causal = torch.full((T, T), float("-inf"), dtype=dt).triu(1)
    w = lambda n: W["language_model." + n]
    x = emb
    for l in range(L):
        b = f"model.layers.{l}."
        y = rms_norm(x, w(b + "input_layernorm.weight"), eps)
        q = (y @ w(b + "self_attn.q_proj.weight").T).reshape(T, nh, hd)
        k = (y @ w(b + "self_attn.k_proj.weight").T).reshape(T, nkv, hd)
        v = (y @ w(b + "self_attn.v_proj.weight").T).reshape(T, nkv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv  # query head j reads kv head j // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + causal
        a = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v).reshape(T, nh * hd)
        x = x + a @ w(b + "self_attn.o_proj.weight").T
        y = rms_norm(x, w(b + "post_attention_layernorm.weight"), eps)
        g = y @ w(b + "mlp.gate_proj.weight").T
        x = x + ((g * torch.sigmoid(g)) * (y @ w(b + "mlp.up_proj.weight").T)) @ w(b + "mlp.down_proj.weight").T
    h = rms_norm(x, w("model.norm.weight"), eps)
    return h, h @ w("lm_head.weight").T


# ------------------------------------------------------------------------------ preprocess/decode

def pixel_values(path: Path, pre: dict, dtype) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    chans = []
    for norm, (c, hh, ww) in zip(pre["tvf_normalize_params"], pre["input_sizes"]):
        im = img if img.size == (ww, hh) else img.resize((ww, hh), Image.BICUBIC)
        x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255.0)  # to_tensor in f32
        x = torch.from_numpy(x).permute(2, 0, 1).to(dtype)
        mean = torch.tensor(norm["mean"], dtype=torch.float32).to(dtype)[:, None, None]
        std = torch.tensor(norm["std"], dtype=torch.float32).to(dtype)[:, None, None]
        chans.append((x - mean) / std)
    return torch.cat(chans, dim=0)


def decode(tokens, V, stats):
    a = stats["action"]
    out = []
    for i, tkn in enumerate(tokens):
        j = min(max(V - tkn - 1, 0), 254)
        c = -1.0 + (2 * j + 1) / 255.0
        if a.get("mask", [True] * 7)[i]:
            c = 0.5 * (c + 1.0) * (a["q99"][i] - a["q01"][i]) + a["q01"][i]
        out.append(c)
    return np.array(out)


# ----------------------------------------------------------------------------------------- main

def check(fixtures: Path) -> int:
    torch.set_num_threads(1)
    ckpt = fixtures / "tiny_openvla"
    golden = json.loads((fixtures / "golden" / "golden.json").read_text())
    tol = golden["tolerances"]
    cfg, W16 = load_checkpoint(ckpt)
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tc = cfg["text_config"]
    V = tc["vocab_size"] - cfg["pad_to_multiple_of"]
    towers = cfg["vision_towers"]
    meta = tok.token_to_id("\u2581")
    failures = []

    def expect(cond, msg):
        if not cond:
            failures.append(msg)
        print(("ok    " if cond else "FAIL  ") + msg)

    # --- static checks of the export
    expect(V == golden["V"] == cfg["pad_token_id"], f"V = vocab_size - pad_to_multiple_of = {V} = pad_token_id")
    expect(tok.token_to_id("<PAD>") == V and tok.get_vocab_size(False) == V, "<PAD> at V, base vocab V")
    expect([tok.token_to_id(s) for s in ("<unk>", "<s>", "</s>")] == [0, 1, 2], "<unk>,<s>,</s> = 0,1,2")
    expect(meta is not None, f"'▁' has id {meta}")
    expected = {"language_model.model.embed_tokens.weight": (tc["vocab_size"], tc["hidden_size"]),
                "language_model.lm_head.weight": (tc["vocab_size"], tc["hidden_size"])}
    for pfx, t in zip(("vision_backbone.featurizer.", "vision_backbone.fused_featurizer."), towers):
        D = t["embed_dim"]
        for i in range(t["depth"]):
            b = f"{pfx}blocks.{i}."
            expected.update({b + "attn.qkv.weight": (3 * D, D), b + "attn.proj.weight": (D, D),
                             b + "mlp.fc1.weight": (t["mlp_hidden_dim"], D), b + "mlp.fc2.weight": (D, t["mlp_hidden_dim"])})
            if t["layer_scale"]:
                expected.update({b + "ls1.scale_factor": (D,), b + "ls2.scale_factor": (D,)})
        expected[pfx + "norm.weight"] = (D,)
    unknown_ls = [n for n in W16 if n.endswith(".gamma")]
    bad = [n for n, s in expected.items() if n not in W16 or tuple(W16[n].shape) != s]
    expect(not bad and not unknown_ls, f"{len(expected)} spot-checked names/shapes present ({bad[:3]}{unknown_ls[:3]})")

    worst = {}
    for dtype in (torch.float32, torch.float64):
        W = cast(W16, dtype)
        dname = str(dtype).split(".")[-1]
        for fr in golden["frames"]:
            G = load_file(str(fixtures / fr["golden"]))
            ids = tok.encode(fr["prompt"]).ids
            if ids[-1] != meta:
                ids.append(meta)
            expect(ids == fr["input_ids"] == G["input_ids"].tolist(), f"[{dname}] {fr['file']}: input_ids ({len(ids)})")
            pv = pixel_values(fixtures / fr["file"], pre, dtype)
            f1 = vit_features(W, "vision_backbone.featurizer.", towers[0], pv[:3])
            f2 = vit_features(W, "vision_backbone.fused_featurizer.", towers[1], pv[3:])
            fused = torch.cat([f1, f2], dim=-1)
            proj = projector(W, fused)
            E = W["language_model.model.embed_tokens.weight"]
            idt = torch.tensor(ids)
            emb = torch.cat([E[idt[:1]], proj, E[idt[1:]]], dim=0)
            hidden, logits = llama(W, tc, emb)
            for name, val in (("pixel_values", pv), ("dino_features", f1), ("siglip_features", f2),
                              ("fused_features", fused), ("projector_out", proj), ("hidden", hidden), ("logits", logits)):
                g = G[name].to(torch.float64)
                assert tuple(g.shape) == tuple(val.shape), (name, g.shape, val.shape)
                d = float((val.to(torch.float64) - g).abs().max())
                r = d / float(g.abs().max())
                worst[(dname, name)] = max(worst.get((dname, name), 0.0), d)
                worst[(dname, name, "rel")] = max(worst.get((dname, name, "rel"), 0.0), r)
                rtol = tol["normwise_relative"].get(name, float("inf"))
                expect(d <= tol[name] and r <= rtol,
                       f"[{dname}] {fr['file']}: {name} {tuple(g.shape)} max|diff| {d:.2e} (tol {tol[name]:g}), "
                       f"normwise rel {r:.1e} (tol {rtol:g})")
            gen = []
            for _ in range(7):
                e = torch.cat([emb, E[torch.tensor(gen, dtype=torch.long)]], dim=0) if gen else emb
                _, lg = llama(W, tc, e)
                gen.append(int(torch.argmax(lg[-1])))
            expect(gen == fr["greedy_tokens"] == G["greedy_tokens"].tolist(), f"[{dname}] {fr['file']}: greedy tokens {gen}")
            act = decode(gen, V, stats[fr["unnorm_key"]])
            d = float(np.abs(act - G["action"].numpy()).max())
            expect(d <= tol["action"] and np.allclose(act, fr["action"], atol=tol["action"], rtol=0),
                   f"[{dname}] {fr['file']}: action max|diff| {d:.1e}")
            a_file = decode(gen, V, stats["bridge_orig"])
            a_cfg = decode(gen, V, cfg["norm_stats"]["bridge_orig"])
            expect(np.allclose(a_file, fr["action_bridge_orig_dataset_statistics"], atol=1e-12)
                   and np.allclose(a_cfg, fr["action_bridge_orig_config_json"], atol=1e-12)
                   and not np.allclose(a_file, a_cfg, atol=1e-6), f"[{dname}] {fr['file']}: bridge_orig file vs config.json actions differ as recorded")

    # resize case
    R = load_file(str(fixtures / golden["resize"]["golden"]))
    pv = pixel_values(fixtures / golden["resize"]["file"], pre, torch.float32)
    d = float((pv - R["resize_pixel_values"]).abs().max())
    expect(d == 0.0, f"resize_pixel_values (PIL bicubic 320x240 -> 224) max|diff| {d:.1e}")

    print("\nworst over frames, vs the golden float32 reference (float32 impl / float64 impl):")
    print(f"  {'tensor':16s} {'max|diff|':>19s}  {'normwise rel':>17s}")
    for name in ("pixel_values", "dino_features", "siglip_features", "fused_features", "projector_out", "hidden", "logits"):
        print(f"  {name:16s} {worst[('float32', name)]:.2e} / {worst[('float64', name)]:.2e}  "
              f"{worst[('float32', name, 'rel')]:.1e} / {worst[('float64', name, 'rel')]:.1e}")
    print("\nFAILED: " + "; ".join(failures) if failures else "\nall checks passed")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=str(REPO / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    return check(Path(args.fixtures))


if __name__ == "__main__":
    sys.exit(main())
