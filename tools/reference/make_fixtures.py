#!/usr/bin/env python3
"""Build the tiny random OpenVLA-shaped checkpoint and the golden outputs that `spec_vla` tests against.

Independent PyTorch reference: the vision towers are timm `VisionTransformer`s, the LLM is transformers'
`LlamaForCausalLM`, the projector is three `nn.Linear`s; preprocessing follows OpenVLA's
`PrismaticImageProcessor` (torchvision functional ops on a PIL image), prompt/splice/greedy/decoding
follow OpenVLA's `predict_action`. The checkpoint is written in the published layout
(docs/checkpoint_layout.md): bf16 tensors, two shards + index, config.json, dataset_statistics.json,
preprocessor_config.json, tokenizer.json. Every reference computation runs in float32 on the
bf16-rounded weights, so a loader that reads the bf16 tensors and casts them to f32 sees the same numbers.

    tools/.venv/bin/python tools/reference/make_fixtures.py            # writes tests/fixtures/...
    tools/.venv/bin/python tools/reference/make_fixtures.py --out /tmp/x   # elsewhere (determinism check)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build_tokenizer import build_tokenizer, openvla_prompt  # noqa: E402

REPO = HERE.parents[1]
SEED = 16  # first seed in 0..29 meeting the criteria in README.md (greedy margins >= 0.2, etc.)
TOKENIZER_TRAIN_SIZE = 128  # trained part of the vocabulary (see build_tokenizer)
N_BINS = 256
PAD_MULT = 64
ACTION_ROW_SCALE = 2.5
QK_GAIN = 3.0  # LLM q/k projections get std QK_GAIN/sqrt(fan_in): sharper attention, so the greedy
               # tokens depend on the image and the prompt rather than only on the last token

DINO = dict(embed_dim=32, depth=3, num_heads=2, mlp_hidden_dim=128, patch_size=14, image_size=224,
            class_token=True, num_register_tokens=4, layer_scale=True, layer_norm_eps=1e-6)
SIGLIP = dict(embed_dim=48, depth=3, num_heads=3, mlp_hidden_dim=179, patch_size=14, image_size=224,
              class_token=False, num_register_tokens=0, layer_scale=False, layer_norm_eps=1e-6)
LLM = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=512)

# bf16-rounded ImageNet constants as the published preprocessor_config.json holds them
DINO_MEAN = [0.484375, 0.455078125, 0.40625]
DINO_STD = [0.228515625, 0.2236328125, 0.224609375]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

FRAMES = [
    # (frame file in /work/shared/libero_frames, unnorm key)
    ("libero_spatial_task0_init0_agentview_224.png", "libero_spatial_no_noops"),
    ("libero_goal_task1_init0_agentview_224.png", "libero_spatial_no_noops"),
]
RESIZE_SOURCE = "libero_spatial_task0_init0_agentview_224.png"
RESIZE_NAME = "resize_320x240.png"

TOLERANCES = {
    "_note": "max |rust - golden| for a float32 implementation that loads the bf16 weights as f32; "
             "see check_fixtures.py for the measured f32-vs-f64 noise these are based on",
    "pixel_values": 1e-6,
    "resize_pixel_values": {"max_abs": 0.0175, "note": "1 uint8 level / std(0.2236) = 0.0175; "
                            "PIL bicubic with antialias, horizontal pass then vertical, uint8 between passes; "
                            "a faithful port is exact (resize_rgb_u8 holds PIL's uint8 result)"},
    "dino_features": 1e-4,
    "siglip_features": 1e-4,
    "fused_features": 1e-4,
    "projector_out": 1e-4,
    "hidden": 5e-4,
    "logits": 1e-3,
    "greedy_tokens": "exact (see greedy_top2_margin: every step's top-1/top-2 gap is far above the logits tolerance)",
    "action": 1e-9,
    "normwise_relative": {
        "_note": "alternative metric: max|rust - golden| / max|golden| (what tests/reference_parity.rs uses); "
                 "measured f32 noise is about 1e-6 (features) to 1e-5 (logits)",
        "dino_features": 1e-4, "siglip_features": 1e-4, "fused_features": 1e-4,
        "projector_out": 1e-4, "hidden": 1e-4, "logits": 1e-4,
    },
}


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------

def make_tower(t: dict, global_pool: str) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    D = t["embed_dim"]
    # timm: mlp hidden = int(D * mlp_ratio); the +0.5 keeps int() from rounding 178.999.. down
    mlp_ratio = (t["mlp_hidden_dim"] + 0.5) / D
    tower = VisionTransformer(
        img_size=t["image_size"], patch_size=t["patch_size"], in_chans=3, num_classes=0,
        global_pool=global_pool, embed_dim=D, depth=t["depth"], num_heads=t["num_heads"],
        mlp_ratio=mlp_ratio, qkv_bias=True,
        init_values=1.0 if t["layer_scale"] else None,
        class_token=t["class_token"], reg_tokens=t["num_register_tokens"],
        no_embed_class=t["class_token"] or t["num_register_tokens"] > 0,
        act_layer=nn.GELU,  # exact (erf) GELU, as timm's default
        norm_layer=partial(nn.LayerNorm, eps=t["layer_norm_eps"]),
    )
    assert tower.blocks[0].mlp.fc1.out_features == t["mlp_hidden_dim"]
    return tower


class Projector(nn.Module):
    """Prismatic 'no-align+fused-gelu-mlp' (HF names fc1/fc2/fc3)."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim, bias=True)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim, bias=True)
        self.fc3 = nn.Linear(llm_dim, llm_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, x):
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))


def make_llm_config(V: int):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=V + PAD_MULT,
        hidden_size=LLM["hidden_size"],
        intermediate_size=LLM["intermediate_size"],
        num_hidden_layers=LLM["num_hidden_layers"],
        num_attention_heads=LLM["num_attention_heads"],
        num_key_value_heads=LLM["num_key_value_heads"],
        head_dim=LLM["hidden_size"] // LLM["num_attention_heads"],
        hidden_act="silu",
        rms_norm_eps=LLM["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": LLM["rope_theta"]},
        max_position_embeddings=LLM["max_position_embeddings"],
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=V,
    )
    cfg._attn_implementation = "eager"
    return cfg


class TinyOpenVLA(nn.Module):
    def __init__(self, V: int):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.V = V
        self.vision_backbone = nn.Module()
        self.vision_backbone.featurizer = make_tower(DINO, "token")
        # SigLIP so400m in timm has a MAP head ('attn_pool'); OpenVLA never uses it but the
        # checkpoint carries it, so the fixture does too.
        self.vision_backbone.fused_featurizer = make_tower(SIGLIP, "map")
        self.projector = Projector(DINO["embed_dim"] + SIGLIP["embed_dim"], LLM["hidden_size"])
        self.language_model = LlamaForCausalLM(make_llm_config(V))

    # --- pieces of OpenVLA's forward ------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor):
        """pixel_values [B,6,224,224] -> (dino [B,256,32], siglip [B,256,48], fused [B,256,80])."""
        img, img_fused = torch.split(pixel_values, [3, 3], dim=1)
        dino, sig = self.vision_backbone.featurizer, self.vision_backbone.fused_featurizer
        # OpenVLA: featurizer.forward = unpack_tuple(partial(get_intermediate_layers, n={len(blocks) - 2}))
        f1 = dino.get_intermediate_layers(img, n={len(dino.blocks) - 2})[0]
        f2 = sig.get_intermediate_layers(img_fused, n={len(sig.blocks) - 2})[0]
        return f1, f2, torch.cat([f1, f2], dim=2)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def llm(self, inputs_embeds: torch.Tensor):
        """Plain causal run over the spliced sequence, positions 0..T-1 -> (post-norm hidden, logits)."""
        T = inputs_embeds.shape[1]
        pos = torch.arange(T, dtype=torch.long)[None]
        out = self.language_model.model(inputs_embeds=inputs_embeds, position_ids=pos, use_cache=False)
        h = out.last_hidden_state
        return h, self.language_model.lm_head(h)

    def splice(self, ids: list[int], projected: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long)[None]
        return torch.cat([self.embed(t[:, :1]), projected, self.embed(t[:, 1:])], dim=1)


def reinit_(model: TinyOpenVLA, seed: int) -> None:
    """Overwrite every parameter with a healthy random value, then round to bf16 (kept as f32)."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    V = model.V
    seen = set()
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("cls_token", "reg_token", "pos_embed", "latent"):
            val = normal(shape, 0.5)
        elif leaf == "gamma":  # LayerScale
            val = uniform(shape, 0.5, 1.5)
        elif p.ndim == 1 and leaf == "weight":  # LayerNorm / RMSNorm weights
            val = uniform(shape, 0.8, 1.2)
        elif p.ndim == 1 and leaf == "bias":
            val = normal(shape, 0.1)
        elif name.endswith("embed_tokens.weight"):
            val = normal(shape, 0.5)
        elif p.ndim >= 2:
            fan_in = int(np.prod(shape[1:]))
            gain = QK_GAIN if name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")) else 1.0
            val = normal(shape, gain / math.sqrt(fan_in))
            if name.endswith("lm_head.weight"):
                val[V - N_BINS:V] *= ACTION_ROW_SCALE
        else:
            raise RuntimeError(f"no init rule for {name} {shape}")
        with torch.no_grad():
            p.copy_(val.to(torch.bfloat16).to(torch.float32))
        seen.add(name)
    assert seen == {n for n, _ in model.named_parameters()}


def export_state_dict(model: TinyOpenVLA) -> dict[str, torch.Tensor]:
    """HF OpenVLA tensor names, bf16. LayerScale `gamma` -> `scale_factor` (as OpenVLA's HF export)."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "scale_factor"
        out[name] = t.detach().to(torch.bfloat16).contiguous()
    return out


# ----------------------------------------------------------------------------------------------
# preprocessing (PrismaticImageProcessor, resize-naive)
# ----------------------------------------------------------------------------------------------

def tvf_pixel_values(img: Image.Image) -> torch.Tensor:
    """[6,224,224] float32: TVF.resize(BICUBIC, antialias) -> center_crop -> to_tensor -> normalize, per tower."""
    import torchvision.transforms.functional as TVF
    from torchvision.transforms import InterpolationMode

    img = img.convert("RGB")
    out = []
    for mean, std in ((DINO_MEAN, DINO_STD), (SIGLIP_MEAN, SIGLIP_STD)):
        x = TVF.resize(img, [224, 224], interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TVF.center_crop(x, [224, 224])
        x = TVF.to_tensor(x)
        x = TVF.normalize(x, mean=mean, std=std)
        out.append(x)
    return torch.cat(out, dim=0)


def pil_resize_224(img: Image.Image) -> Image.Image:
    return img.convert("RGB").resize((224, 224), Image.BICUBIC)


# ----------------------------------------------------------------------------------------------
# action decoding (OpenVLA predict_action)
# ----------------------------------------------------------------------------------------------

def decode_action(tokens: list[int], V: int, stats: dict) -> np.ndarray:
    bins = np.linspace(-1, 1, N_BINS)
    bin_centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = V - np.asarray(tokens)
    discretized = np.clip(discretized - 1, a_min=0, a_max=bin_centers.shape[0] - 1)
    normalized = bin_centers[discretized]
    a = stats["action"]
    mask = np.array(a.get("mask", [True] * len(a["q01"])), dtype=bool)
    hi, lo = np.array(a["q99"]), np.array(a["q01"])
    return np.where(mask, 0.5 * (normalized + 1) * (hi - lo) + lo, normalized)


# ----------------------------------------------------------------------------------------------
# statistics / configs
# ----------------------------------------------------------------------------------------------

def norm_entry(action_q01, action_q99, mean, std, n_trans, n_traj):
    amin = [round(q - 0.07, 4) if i < 6 else 0.0 for i, q in enumerate(action_q01)]
    amax = [round(q + 0.06, 4) if i < 6 else 1.0 for i, q in enumerate(action_q99)]
    return {
        "action": {
            "mean": mean, "std": std, "max": amax, "min": amin,
            "q01": action_q01, "q99": action_q99,
            "mask": [True] * 6 + [False],
        },
        "proprio": {
            "mean": [-0.0452, 0.0312, 1.0521, 2.9702, -0.1531, -0.0914, 0.0268, -0.0271],
            "std": [0.1016, 0.1513, 0.3818, 0.3462, 0.9057, 0.3201, 0.0144, 0.0142],
            "max": [0.2106, 0.3887, 1.3327, 3.6612, 3.5644, 1.3851, 0.0409, 0.0012],
            "min": [-0.4832, -0.3174, 0.8815, -3.9872, -3.2741, -1.8214, -0.0025, -0.0410],
            "q01": [-0.4226, -0.2897, 0.9019, 1.3412, -2.8913, -1.0571, 0.0015, -0.0402],
            "q99": [0.1307, 0.3411, 1.2957, 3.3120, 2.6311, 0.8214, 0.0406, -0.0014],
        },
        "num_transitions": n_trans,
        "num_trajectories": n_traj,
    }


def dataset_statistics() -> dict:
    libero = norm_entry(
        action_q01=[-0.7454, -0.6664, -0.9375, -0.1132, -0.1656, -0.2034, 0.0],
        action_q99=[0.9375, 0.8625, 0.9375, 0.1439, 0.1875, 0.3086, 1.0],
        mean=[0.1531, 0.1371, -0.1551, -0.0052, -0.0112, -0.0019, 0.4680],
        std=[0.4128, 0.3467, 0.5009, 0.0375, 0.0744, 0.0783, 0.4990],
        n_trans=52970, n_traj=432)
    bridge_file = norm_entry(
        action_q01=[-0.0297, -0.0421, -0.0261, -0.0809, -0.0924, -0.2062, 0.0],
        action_q99=[0.0288, 0.0410, 0.0402, 0.0818, 0.0787, 0.2037, 1.0],
        mean=[0.0002, 0.0001, -0.0001, -0.0002, -0.0003, 0.0002, 0.5767],
        std=[0.0096, 0.0135, 0.0126, 0.0288, 0.0305, 0.0766, 0.4974],
        n_trans=2135463, n_traj=60064)
    return {"libero_spatial_no_noops": libero, "bridge_orig": bridge_file}


def config_norm_stats() -> dict:
    """config.json holds only bridge_orig, with DIFFERENT numbers from dataset_statistics.json, so a
    test can tell which source won (the file must override config.json)."""
    bridge_cfg = norm_entry(
        action_q01=[-0.0300, -0.0450, -0.0300, -0.0850, -0.0950, -0.2100, 0.0],
        action_q99=[0.0300, 0.0450, 0.0425, 0.0850, 0.0800, 0.2100, 1.0],
        mean=[0.0002, 0.0001, -0.0001, -0.0002, -0.0003, 0.0002, 0.5767],
        std=[0.0097, 0.0136, 0.0127, 0.0289, 0.0306, 0.0767, 0.4975],
        n_trans=2135463, n_traj=60064)
    return {"bridge_orig": bridge_cfg}


def make_config(V: int) -> dict:
    def tower_json(t):
        return {k: t[k] for k in ("embed_dim", "depth", "num_heads", "mlp_hidden_dim", "patch_size", "image_size",
                                  "class_token", "num_register_tokens", "layer_scale", "layer_norm_eps")}

    import transformers
    return {
        "arch_specifier": "no-align+fused-gelu-mlp",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": LLM["max_position_embeddings"],
        "model_type": "openvla",
        "n_action_bins": N_BINS,
        "norm_stats": config_norm_stats(),
        "output_projector_states": False,
        "pad_to_multiple_of": PAD_MULT,
        "pad_token_id": V,
        "text_config": {
            "model_type": "llama",
            "hidden_size": LLM["hidden_size"],
            "intermediate_size": LLM["intermediate_size"],
            "num_hidden_layers": LLM["num_hidden_layers"],
            "num_attention_heads": LLM["num_attention_heads"],
            "num_key_value_heads": LLM["num_key_value_heads"],
            "hidden_act": "silu",
            "rms_norm_eps": LLM["rms_norm_eps"],
            "rope_theta": LLM["rope_theta"],
            "max_position_embeddings": LLM["max_position_embeddings"],
            "vocab_size": V + PAD_MULT,
            "pad_token_id": V,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "torch_dtype": "bfloat16",
        },
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "vision_towers": [tower_json(DINO), tower_json(SIGLIP)],
    }


def preprocessor_config() -> dict:
    resize = {"antialias": True, "interpolation": 3, "max_size": None, "size": [224, 224]}
    return {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        },
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]],
        "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
        "processor_class": "PrismaticProcessor",
        "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "tvf_crop_params": [{"output_size": [224, 224]}, {"output_size": [224, 224]}],
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [
            {"inplace": False, "mean": DINO_MEAN, "std": DINO_STD},
            {"inplace": False, "mean": SIGLIP_MEAN, "std": SIGLIP_STD},
        ],
        "tvf_resize_params": [dict(resize), dict(resize)],
        "use_fused_vision_backbone": True,
    }


def write_json(path: Path, obj, compact_lists: bool = False) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    if compact_lists:  # put lists of plain numbers on one line
        text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
        assert json.loads(text) == json.loads(json.dumps(obj))
    path.write_text(text + "\n")


def save_sharded(sd: dict[str, torch.Tensor], folder: Path) -> None:
    names = list(sd.keys())  # state_dict order: vision, projector, language model
    # shard 1: vision + projector + embed_tokens + first LLM layer; shard 2: the rest (a real
    # save_pretrained cut also falls in the middle of the LLM)
    cut = next(i for i, n in enumerate(names) if n.startswith("language_model.model.layers.1."))
    shards = {
        "model-00001-of-00002.safetensors": names[:cut],
        "model-00002-of-00002.safetensors": names[cut:],
    }
    weight_map, total = {}, 0
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(folder / fname), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
            total += sd[k].numel() * sd[k].element_size()
    write_json(folder / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def run(frames_dir: Path, out_root: Path) -> dict:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # deterministic reductions, and the machine is shared

    manifest = {e["file"]: e for e in json.loads((frames_dir / "manifest.json").read_text())}
    instructions = list(dict.fromkeys(e["instruction"] for e in manifest.values()))

    ckpt = out_root / "tiny_openvla"
    gold = out_root / "golden"
    fdir = out_root / "frames"
    for d in (ckpt, gold, fdir):
        d.mkdir(parents=True, exist_ok=True)

    # tokenizer
    tok, V = build_tokenizer([openvla_prompt(i) for i in instructions], merges_vocab_size=TOKENIZER_TRAIN_SIZE)
    tok.save(str(ckpt / "tokenizer.json"))
    meta_id = tok.token_to_id("\u2581")

    # model
    model = TinyOpenVLA(V).eval()
    reinit_(model, SEED)
    sd = export_state_dict(model)
    save_sharded(sd, ckpt)
    write_json(ckpt / "config.json", make_config(V))
    stats = dataset_statistics()
    write_json(ckpt / "dataset_statistics.json", stats)
    write_json(ckpt / "preprocessor_config.json", preprocessor_config())
    cfg_stats = config_norm_stats()

    golden = {
        "_about": "generated by tools/reference/make_fixtures.py; see tools/reference/README.md",
        "checkpoint": "tiny_openvla",
        "V": V,
        "vocab_size": V + PAD_MULT,
        "meta_token_id": meta_id,
        "seed": SEED,
        "tolerances": TOLERANCES,
        "frames": [],
    }

    for fname, key in FRAMES:
        entry = manifest[fname]
        shutil.copyfile(frames_dir / fname, fdir / fname)
        stem = Path(fname).stem
        img = Image.open(fdir / fname)
        assert img.size == (224, 224), img.size
        pv = tvf_pixel_values(img)  # [6,224,224]

        prompt = openvla_prompt(entry["instruction"])
        ids = tok.encode(prompt).ids
        if ids[-1] != meta_id:  # OpenVLA predict_action
            ids = ids + [meta_id]
        assert 0 not in ids

        dino, sig, fused = model.vision_features(pv[None])
        proj = model.projector(fused)
        embeds = model.splice(ids, proj)
        hidden, logits = model.llm(embeds)
        # cross-check: the full HF CausalLM forward gives the same logits
        ref = model.language_model(inputs_embeds=embeds,
                                   position_ids=torch.arange(embeds.shape[1])[None], use_cache=False).logits
        assert torch.equal(ref, logits), (ref - logits).abs().max()

        # greedy, full recompute each step (no KV cache)
        gen, margins = [], []
        for _ in range(7):
            seq = ids + gen
            _, lg = model.llm(model.splice(seq, proj))
            last = lg[0, -1]
            top = torch.topk(last, 2)
            gen.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            assert int(torch.argmax(last)) == gen[-1]
        # cross-check: HF generate with its KV cache (what OpenVLA's predict_action runs) agrees
        T = embeds.shape[1]
        hf = model.language_model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(1, T, dtype=torch.long), max_new_tokens=7,
            min_new_tokens=7, do_sample=False, pad_token_id=V)
        assert hf[0].tolist() == gen, (hf.tolist(), gen)
        action = decode_action(gen, V, stats[key])

        tensors = {
            "pixel_values": pv.contiguous(),
            "dino_features": dino[0].contiguous(),
            "siglip_features": sig[0].contiguous(),
            "fused_features": fused[0].contiguous(),
            "projector_out": proj[0].contiguous(),
            "input_ids": torch.tensor(ids, dtype=torch.int64),
            "hidden": hidden[0].contiguous(),
            "logits": logits[0].contiguous(),
            "greedy_tokens": torch.tensor(gen, dtype=torch.int64),
            "greedy_top2_margin": torch.tensor(margins, dtype=torch.float32),
            "action": torch.from_numpy(action.astype(np.float64)),
        }
        save_file(tensors, str(gold / f"{stem}.safetensors"), metadata={"format": "pt"})
        golden["frames"].append({
            "file": f"frames/{fname}",
            "golden": f"golden/{stem}.safetensors",
            "instruction": entry["instruction"],
            "unnorm_key": key,
            "prompt": prompt,
            "input_ids": ids,
            "seq_len": int(embeds.shape[1]),
            "greedy_tokens": gen,
            "greedy_action_bins": [V - t for t in gen],
            "greedy_top2_margin": margins,
            "action": action.tolist(),
            "action_bridge_orig_dataset_statistics": decode_action(gen, V, stats["bridge_orig"]).tolist(),
            "action_bridge_orig_config_json": decode_action(gen, V, cfg_stats["bridge_orig"]).tolist(),
        })

    # resize case: a 320x240 image, then PIL bicubic (antialiased) down to 224x224
    src = Image.open(frames_dir / RESIZE_SOURCE).convert("RGB")
    src.resize((320, 240), Image.BICUBIC).save(fdir / RESIZE_NAME, optimize=False)
    rimg = Image.open(fdir / RESIZE_NAME)
    assert rimg.size == (320, 240)
    r224 = pil_resize_224(rimg)
    rpv = tvf_pixel_values(rimg)
    # the torchvision path on a PIL image is PIL's resize, i.e. the same uint8 image
    mean = torch.tensor(DINO_MEAN + SIGLIP_MEAN)[:, None, None]
    std = torch.tensor(DINO_STD + SIGLIP_STD)[:, None, None]
    x = torch.from_numpy(np.asarray(r224, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    assert torch.equal(rpv, (torch.cat([x, x]) - mean) / std)
    save_file({"resize_pixel_values": rpv.contiguous(),
               "resize_rgb_u8": torch.from_numpy(np.asarray(r224, dtype=np.uint8).copy())},
              str(gold / "resize.safetensors"), metadata={"format": "pt"})
    golden["resize"] = {
        "file": f"frames/{RESIZE_NAME}",
        "golden": "golden/resize.safetensors",
        "source": RESIZE_SOURCE,
        "made_with": "PIL Image.resize((320, 240), BICUBIC) of the source frame, saved as PNG",
        "reference": "PIL Image.resize((224, 224), BICUBIC) (antialiased downscale) -> /255 -> per-tower normalise",
        "tensors": {"resize_pixel_values": "[6,224,224] f32", "resize_rgb_u8": "[224,224,3] u8, PIL's resized image"},
    }
    write_json(gold / "golden.json", golden, compact_lists=True)
    return golden


def file_report(root: Path) -> list[tuple[str, int, str]]:
    """(path, size, sha256[:16]) of the files this script writes (other files under root are skipped)."""
    rows = []
    for p in sorted(q for d in ("tiny_openvla", "golden", "frames") for q in (root / d).rglob("*")):
        if p.is_file():
            rows.append((str(p.relative_to(root)), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()[:16]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="/work/shared/libero_frames", help="folder with manifest.json and the pngs")
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"), help="fixtures root (default tests/fixtures)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    golden = run(Path(args.frames), out)

    print(f"V = {golden['V']}, vocab_size = {golden['vocab_size']}, '▁' id = {golden['meta_token_id']}")
    for fr in golden["frames"]:
        print(f"{fr['file']}: T={fr['seq_len']} ids={fr['input_ids']}")
        print(f"   greedy={fr['greedy_tokens']} bins={fr['greedy_action_bins']}")
        print(f"   margins={[round(m, 4) for m in fr['greedy_top2_margin']]}")
        print(f"   action={[round(a, 6) for a in fr['action']]}")
    total = 0
    for rel, size, h in file_report(out):
        total += size
        print(f"{size:>10}  {h}  {rel}")
    print(f"{total:>10}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
