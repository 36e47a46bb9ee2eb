"""Shared pieces of the micro OpenVLA-shaped policy: model, prompt, action tokenizer, statistics.

Everything here follows docs/checkpoint_layout.md and OpenVLA's published pipeline:
- prompt "In: What action should the robot take to {instruction.lower()}?\nOut:", BOS from the
  tokenizer's post-processor, then the id of "▁" appended unless already last;
- LLM input = [embed(BOS)] ++ projector(vision features) ++ embed(ids[1:]) (++ action ids when training);
- actions: LIBERO gripper (-1 open / +1 close) -> clip to [0,1] -> 1 - g (1 = open); dims 0-5
  normalised with BOUNDS_Q99 (clip to [-1,1], mask true), gripper left as is (mask false);
  every dim then np.clip(-1,1) + np.digitize over linspace(-1,1,256); token = V - bin.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass, asdict, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
N_BINS = 256
ACTION_DIM = 7
PROMPT_TEMPLATE = "In: What action should the robot take to {}?\nOut:"

# Normalisation constants exactly as OpenVLA's preprocessor_config.json holds them (DINO values
# rounded to bf16 by the converter), one entry per tower.
DINO_MEAN = [0.484375, 0.455078125, 0.40625]
DINO_STD = [0.228515625, 0.2236328125, 0.224609375]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]


def prompt_for(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction.lower())


def unnorm_key(suite: str) -> str:
    return f"{suite}_no_noops"


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class TowerCfg:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    patch_size: int = 28
    image_size: int = 224
    class_token: bool = True
    num_register_tokens: int = 4
    layer_scale: bool = True
    layer_norm_eps: float = 1e-6


@dataclass
class ModelCfg:
    dino: TowerCfg = field(default_factory=lambda: TowerCfg(128, 4, 4, 512))
    siglip: TowerCfg = field(
        default_factory=lambda: TowerCfg(128, 4, 4, 478, class_token=False, num_register_tokens=0, layer_scale=False)
    )
    hidden: int = 256
    layers: int = 8
    heads: int = 8
    kv_heads: int = 8
    intermediate: int = 688
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_pos: int = 2048
    base_vocab: int = 0  # V, set from the tokenizer
    pad_to_multiple_of: int = 64

    @property
    def vocab(self) -> int:
        return self.base_vocab + self.pad_to_multiple_of

    def to_dict(self):
        d = asdict(self)
        return d

    @staticmethod
    def from_dict(d):
        d = dict(d)
        d["dino"] = TowerCfg(**d["dino"])
        d["siglip"] = TowerCfg(**d["siglip"])
        return ModelCfg(**d)


def preset_cfg(name: str, base_vocab: int) -> ModelCfg:
    """Model sizes by name. `base` is the first embedded model (224 px, patch 28, towers 128x4, Llama 256x8,
    ~4.7 GFLOP per sample forward and backward). `goal96` is sized for training on a 2-core CPU: 96 px frames at
    patch 16 (36 patches per tower), towers 96 wide x 4 deep with 3 heads of 32, a Llama 192 wide x 4 layers with
    6 heads of 32 (the crate's fast attention path wants head sizes that are multiples of 32)."""
    if name == "base":
        return ModelCfg(base_vocab=base_vocab)
    if name == "goal96":
        def tower(**kw):
            return TowerCfg(96, 4, 3, 384, patch_size=16, image_size=96, **kw)
        return ModelCfg(dino=tower(), siglip=tower(class_token=False, num_register_tokens=0, layer_scale=False),
                        hidden=192, layers=4, heads=6, kv_heads=6, intermediate=512, base_vocab=base_vocab)
    raise ValueError(f"unknown model preset {name!r} (base, goal96)")


# --------------------------------------------------------------------------------------------
# model


def make_tower(t: TowerCfg) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    mlp_ratio = t.mlp_hidden_dim / t.embed_dim
    vit = VisionTransformer(
        img_size=t.image_size,
        patch_size=t.patch_size,
        in_chans=3,
        num_classes=0,
        global_pool="token" if t.class_token else "avg",
        embed_dim=t.embed_dim,
        depth=t.depth,
        num_heads=t.num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        init_values=1e-5 if t.layer_scale else None,
        class_token=t.class_token,
        reg_tokens=t.num_register_tokens,
        no_embed_class=t.class_token or t.num_register_tokens > 0,
        fc_norm=False,
        act_layer=nn.GELU,  # exact erf GELU
        norm_layer=functools.partial(nn.LayerNorm, eps=t.layer_norm_eps),
    )
    assert vit.blocks[0].mlp.fc1.out_features == t.mlp_hidden_dim, "mlp_hidden_dim not reproducible"
    return vit


def tower_features(vit, x):
    """OpenVLA featurizer: patch tokens after the second-to-last block, no final norm."""
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    for blk in vit.blocks[: len(vit.blocks) - 1]:
        x = blk(x)
    return x[:, vit.num_prefix_tokens :]


class VisionBackbone(nn.Module):
    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.featurizer = make_tower(cfg.dino)
        self.fused_featurizer = make_tower(cfg.siglip)

    def forward(self, pixel_values):
        a, b = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([tower_features(self.featurizer, a), tower_features(self.fused_featurizer, b)], dim=2)


class FusedProjector(nn.Module):
    def __init__(self, vision_dim, llm_dim):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x):
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


def llama_config(cfg: ModelCfg, pad_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        hidden_act="silu",
        max_position_embeddings=cfg.max_pos,
        rms_norm_eps=cfg.rms_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=pad_id,
        attention_bias=False,
        mlp_bias=False,
    )


class MicroVLA(nn.Module):
    def __init__(self, cfg: ModelCfg):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.cfg = cfg
        self.vision_backbone = VisionBackbone(cfg)
        self.projector = FusedProjector(cfg.dino.embed_dim + cfg.siglip.embed_dim, cfg.hidden)
        lc = llama_config(cfg, cfg.base_vocab)
        lc._attn_implementation = "sdpa"
        self.language_model = LlamaForCausalLM(lc)

    @property
    def n_patches(self):
        t = self.cfg.dino
        return (t.image_size // t.patch_size) ** 2

    def embed_inputs(self, pixel_values, text_ids):
        """text_ids: [B, L] = ids[1:] (after BOS), right-padded with PAD. Returns inputs_embeds."""
        emb = self.language_model.model.embed_tokens
        B = pixel_values.shape[0]
        bos = emb(torch.full((B, 1), 1, dtype=torch.long, device=pixel_values.device))
        vis = self.projector(self.vision_backbone(pixel_values))
        return torch.cat([bos, vis, emb(text_ids)], dim=1)

    def hidden(self, pixel_values, text_ids):
        x = self.embed_inputs(pixel_values, text_ids)
        out = self.language_model.model(inputs_embeds=x, use_cache=False)
        return out.last_hidden_state

    def logits(self, pixel_values, text_ids):
        return self.language_model.lm_head(self.hidden(pixel_values, text_ids))


def export_state_dict(model: MicroVLA) -> dict:
    """State dict with OpenVLA's tensor names (LayerScale gamma -> scale_factor)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith(".gamma"):
            k = k[: -len(".gamma")] + ".scale_factor"
        out[k] = v
    return out


def load_export_state_dict(model: MicroVLA, sd: dict, strict=True):
    fixed = {}
    for k, v in sd.items():
        if k.endswith(".scale_factor"):
            k = k[: -len(".scale_factor")] + ".gamma"
        fixed[k] = v
    missing, unexpected = model.load_state_dict(fixed, strict=strict)
    return missing, unexpected


# --------------------------------------------------------------------------------------------
# images


def resize_frames(frames_u8: np.ndarray, size: int) -> np.ndarray:
    """[T,H,W,3] uint8 -> [T,size,size,3] with PIL's BICUBIC (antialiased), as OpenVLA's processor resizes; the
    crate's Catmull-Rom resize of the same frame differs by at most one 8-bit level. Unchanged at its size."""
    if frames_u8.shape[1:3] == (size, size):
        return frames_u8
    from PIL import Image
    out = np.empty((len(frames_u8), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(frames_u8):
        out[i] = np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC))
    return out


def pixel_values_from_uint8(frames_u8: torch.Tensor) -> torch.Tensor:
    """[B,S,S,3] uint8 RGB -> [B,6,S,S] float32 (DINO channels 0-2, SigLIP 3-5)."""
    x = frames_u8.permute(0, 3, 1, 2).float().div_(255.0)
    dm = torch.tensor(DINO_MEAN).view(1, 3, 1, 1)
    ds = torch.tensor(DINO_STD).view(1, 3, 1, 1)
    sm = torch.tensor(SIGLIP_MEAN).view(1, 3, 1, 1)
    ss = torch.tensor(SIGLIP_STD).view(1, 3, 1, 1)
    return torch.cat([(x - dm) / ds, (x - sm) / ss], dim=1)


# --------------------------------------------------------------------------------------------
# actions


def libero_to_openvla(actions: np.ndarray) -> np.ndarray:
    """LIBERO action (gripper -1 open / +1 close) -> OpenVLA's dataset convention (gripper 1 open, 0 close)."""
    a = np.asarray(actions, dtype=np.float32).copy()
    a[..., 6] = 1.0 - np.clip(a[..., 6], 0.0, 1.0)
    return a


def noop_mask(actions_libero: np.ndarray) -> np.ndarray:
    """True for transitions OpenVLA's `_no_noops` conversion drops: ~zero arm motion and the
    gripper command equal to the previous one."""
    a = np.asarray(actions_libero)
    prev_g = np.concatenate([[a[0, 6] if len(a) else 0.0], a[:-1, 6]]) if len(a) else a[:, 6]
    return (np.linalg.norm(a[:, :6], axis=1) < 1e-4) & (prev_g == a[:, 6])


def compute_stats(actions_openvla: np.ndarray, n_traj: int) -> dict:
    a = actions_openvla.astype(np.float64)
    mask = [True] * 6 + [False]
    return {
        "action": {
            "mean": a.mean(0).astype(np.float32).tolist(),
            "std": a.std(0).astype(np.float32).tolist(),
            "max": a.max(0).astype(np.float32).tolist(),
            "min": a.min(0).astype(np.float32).tolist(),
            "q01": np.quantile(a, 0.01, axis=0).astype(np.float32).tolist(),
            "q99": np.quantile(a, 0.99, axis=0).astype(np.float32).tolist(),
            "mask": mask,
        },
        "proprio": {k: [0.0] * 8 for k in ["mean", "std", "max", "min", "q01", "q99"]},
        "num_transitions": int(a.shape[0]),
        "num_trajectories": int(n_traj),
    }


def normalize_actions(a_ovla: np.ndarray, st: dict) -> np.ndarray:
    """OpenVLA BOUNDS_Q99 normalisation for mask-true dims; masked dims unchanged; min==max dims -> 0."""
    s = st["action"]
    q01 = np.array(s["q01"], np.float32)
    q99 = np.array(s["q99"], np.float32)
    mask = np.array(s["mask"], bool)
    n = np.clip(2 * (a_ovla - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    n = np.where(mask, n, a_ovla)
    zero = np.array(s["min"], np.float32) == np.array(s["max"], np.float32)
    n = np.where(zero & mask, 0.0, n)  # OpenVLA zeroes constant dims (only mask-true ones are normalised)
    return n.astype(np.float32)


BINS = np.linspace(-1, 1, N_BINS)
BIN_CENTERS = (BINS[:-1] + BINS[1:]) / 2.0


def action_tokens(a_norm: np.ndarray, V: int) -> np.ndarray:
    d = np.digitize(np.clip(a_norm, -1.0, 1.0), BINS)
    return (V - d).astype(np.int64)


def decode_tokens(tokens, V: int, st: dict) -> np.ndarray:
    """OpenVLA predict_action decoding: bin centre, un-normalise where mask (gripper kept in [0,1] space)."""
    t = np.asarray(tokens, np.int64)
    j = np.clip(V - t - 1, 0, N_BINS - 2)
    c = BIN_CENTERS[j]
    s = st["action"]
    q01 = np.array(s["q01"], np.float64)
    q99 = np.array(s["q99"], np.float64)
    mask = np.array(s["mask"], bool)
    return np.where(mask, 0.5 * (c + 1) * (q99 - q01) + q01, c)


def openvla_gripper_to_libero(g):
    """run_libero_eval post-processing: normalize_gripper_action(binarize) then invert."""
    g = np.sign(2 * np.asarray(g) - 1)
    return -g


# --------------------------------------------------------------------------------------------
# tokenizer


def load_tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def tokenizer_info(tok) -> dict:
    """V (base vocabulary incl. the 256 action tokens, <PAD> at V) and the '▁' id."""
    pad = tok.token_to_id("<PAD>")
    assert pad is not None, "tokenizer needs <PAD>"
    V = pad
    sp = tok.token_to_id("▁")
    assert tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2 and tok.token_to_id("<unk>") == 0
    return {"V": V, "space_id": sp, "vocab_size_with_pad": tok.get_vocab_size()}


def prompt_ids(tok, instruction: str, space_id):
    ids = tok.encode(prompt_for(instruction)).ids
    assert ids[0] == 1, "tokenizer must add BOS"
    if space_id is not None and ids[-1] != space_id:
        ids = ids + [space_id]
    return ids


def build_or_import_tokenizer(texts, out_path, merges_vocab_size=400):
    """Use tools/reference/build_tokenizer.py when present, else the fallback below."""
    ref = os.path.join(ROOT, "tools", "reference")
    if os.path.exists(os.path.join(ref, "build_tokenizer.py")):
        sys.path.insert(0, ref)
        try:
            from build_tokenizer import build_tokenizer  # type: ignore

            tok, V = build_tokenizer(texts, merges_vocab_size=merges_vocab_size)
            tok.save(out_path)
            return out_path, "tools/reference/build_tokenizer.py"
        finally:
            sys.path.pop(0)
    tok = fallback_tokenizer(texts)
    tok.save(out_path)
    return out_path, "tools/microvla/common.py:fallback_tokenizer"


def fallback_tokenizer(texts, text_vocab=512):
    """Small Metaspace BPE: <unk> 0, <s> 1, </s> 2, text tokens, then 256 action tokens as the last
    ids of the base vocabulary V, <PAD> at V; BOS added by a TemplateProcessing post-processor."""
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders, processors, AddedToken

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(
        vocab_size=text_vocab, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=["▁"], show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    n = tok.get_vocab_size()
    # action tokens: plain (non-special) tokens that never occur in text
    tok.add_tokens([AddedToken(f"<ACT_{i:03d}>", special=False, normalized=False) for i in range(N_BINS)])
    tok.add_special_tokens([AddedToken("<PAD>", special=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    assert tok.token_to_id("<PAD>") == n + N_BINS
    return tok
