#!/usr/bin/env python3
"""Export a training checkpoint in the published OpenVLA checkpoint layout, then self-check it.

    tools/.venv/bin/python tools/microvla/export.py --ckpt tools/microvla/out/ckpt.pt \
        --out models/microvla-libero [--dtype bf16|f32]

Writes config.json, model.safetensors, tokenizer.json, dataset_statistics.json,
preprocessor_config.json (README.md is written by hand / by write_card in this file).
The self-check (also `--check-only`) rebuilds a model from the exported config.json alone, loads the
tensors with plain `safetensors.torch.load_file`, and compares its logits with the checkpoint's
model (weights rounded to the export dtype: must match to float32 rounding; unrounded f32 weights:
the difference is reported).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD, ModelCfg, MicroVLA, TowerCfg, export_state_dict,
    load_export_state_dict, load_tokenizer, pixel_values_from_uint8, prompt_ids, tokenizer_info,
)

NAME_PATTERNS = [
    r"vision_backbone\.(featurizer|fused_featurizer)\.(cls_token|reg_token|pos_embed)",
    r"vision_backbone\.(featurizer|fused_featurizer)\.patch_embed\.proj\.(weight|bias)",
    r"vision_backbone\.(featurizer|fused_featurizer)\.blocks\.\d+\.(norm1|norm2)\.(weight|bias)",
    r"vision_backbone\.(featurizer|fused_featurizer)\.blocks\.\d+\.attn\.(qkv|proj)\.(weight|bias)",
    r"vision_backbone\.(featurizer|fused_featurizer)\.blocks\.\d+\.(ls1|ls2)\.scale_factor",
    r"vision_backbone\.(featurizer|fused_featurizer)\.blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)",
    r"vision_backbone\.(featurizer|fused_featurizer)\.norm\.(weight|bias)",
    r"projector\.(fc1|fc2|fc3)\.(weight|bias)",
    r"language_model\.model\.embed_tokens\.weight",
    r"language_model\.model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj\.weight",
    r"language_model\.model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
    r"language_model\.model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight",
    r"language_model\.model\.norm\.weight",
    r"language_model\.lm_head\.weight",
]


def tower_json(t: TowerCfg):
    return {"embed_dim": t.embed_dim, "depth": t.depth, "num_heads": t.num_heads, "mlp_hidden_dim": t.mlp_hidden_dim,
            "patch_size": t.patch_size, "image_size": t.image_size, "class_token": t.class_token,
            "num_register_tokens": t.num_register_tokens, "layer_scale": t.layer_scale,
            "layer_norm_eps": t.layer_norm_eps}


def tower_from_json(d) -> TowerCfg:
    return TowerCfg(**d)


def text_config(cfg: ModelCfg, dtype_name):
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_pos,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": cfg.base_vocab,
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name,
    }


def make_config(cfg: ModelCfg, stats, dtype_name):
    import transformers

    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "model_type": "openvla",
        "vision_backbone_id": f"micro-dinosiglip-vit-p{cfg.dino.patch_size}-{cfg.dino.image_size}px",
        "llm_backbone_id": f"micro-llama-{cfg.hidden}d-{cfg.layers}l",
        "hf_llm_id": None,
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [cfg.dino.image_size, cfg.siglip.image_size],
        "timm_model_ids": [f"micro_vit_dinov2_reg4_p{cfg.dino.patch_size}_{cfg.dino.image_size}",
                           f"micro_vit_siglip_p{cfg.siglip.patch_size}_{cfg.siglip.image_size}"],
        "timm_override_act_layers": [None, None],
        "vision_towers": [tower_json(cfg.dino), tower_json(cfg.siglip)],
        "llm_max_length": cfg.max_pos,
        "pad_token_id": cfg.base_vocab,
        "pad_to_multiple_of": cfg.pad_to_multiple_of,
        "n_action_bins": 256,
        "norm_stats": stats,
        "output_projector_states": False,
        "text_config": text_config(cfg, dtype_name),
        "torch_dtype": dtype_name,
        "transformers_version": transformers.__version__,
    }


def preprocessor_config(cfg: ModelCfg):
    return {
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                     "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "image_resize_strategy": "resize-naive",
        "use_fused_vision_backbone": True,
        "input_sizes": [[3, cfg.dino.image_size, cfg.dino.image_size], [3, cfg.siglip.image_size, cfg.siglip.image_size]],
        "interpolations": ["bicubic", "bicubic"],
        "means": [DINO_MEAN, SIGLIP_MEAN],
        "stds": [DINO_STD, SIGLIP_STD],
        "tvf_resize_params": [{"size": [cfg.dino.image_size, cfg.dino.image_size], "interpolation": 3, "max_size": None, "antialias": True},
                              {"size": [cfg.siglip.image_size, cfg.siglip.image_size], "interpolation": 3, "max_size": None, "antialias": True}],
        "tvf_crop_params": [{"output_size": [cfg.dino.image_size, cfg.dino.image_size]},
                            {"output_size": [cfg.siglip.image_size, cfg.siglip.image_size]}],
        "tvf_normalize_params": [{"mean": DINO_MEAN, "std": DINO_STD, "inplace": False},
                                 {"mean": SIGLIP_MEAN, "std": SIGLIP_STD, "inplace": False}],
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
    }


def load_ckpt_model(ckpt_path):
    ck = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    cfg = ModelCfg.from_dict(ck["cfg"])
    model = MicroVLA(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, cfg, ck


def model_from_export(folder):
    """Build a model from config.json alone and load model.safetensors with plain safetensors."""
    from safetensors.torch import load_file

    c = json.load(open(os.path.join(folder, "config.json")))
    tc = c["text_config"]
    cfg = ModelCfg(
        dino=tower_from_json(c["vision_towers"][0]), siglip=tower_from_json(c["vision_towers"][1]),
        hidden=tc["hidden_size"], layers=tc["num_hidden_layers"], heads=tc["num_attention_heads"],
        kv_heads=tc.get("num_key_value_heads", tc["num_attention_heads"]), intermediate=tc["intermediate_size"],
        rms_eps=tc["rms_norm_eps"], rope_theta=tc["rope_theta"], max_pos=tc["max_position_embeddings"],
        base_vocab=tc["vocab_size"] - c["pad_to_multiple_of"], pad_to_multiple_of=c["pad_to_multiple_of"],
    )
    model = MicroVLA(cfg)
    sd = {k: v.float() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    load_export_state_dict(model, sd, strict=True)
    model.eval()
    return model, cfg, c


def self_check(folder, ckpt_path, dtype):
    from safetensors import safe_open

    torch.manual_seed(0)
    ref, cfg, ck = load_ckpt_model(ckpt_path)
    exp, cfg2, c = model_from_export(folder)
    # names follow the contract
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = list(f.keys())
    bad = [n for n in names if not any(re.fullmatch(p, n) for p in NAME_PATTERNS)]
    assert not bad, f"tensor names outside the contract: {bad[:5]}"
    tok = load_tokenizer(os.path.join(folder, "tokenizer.json"))
    info = tokenizer_info(tok)
    assert info["V"] == c["text_config"]["vocab_size"] - c["pad_to_multiple_of"] == c["pad_token_id"]
    ids = prompt_ids(tok, "put the bowl on the plate", info["space_id"])
    g = torch.Generator().manual_seed(1)
    S = cfg.dino.image_size
    img = torch.randint(0, 256, (2, S, S, 3), generator=g, dtype=torch.uint8)
    pv = pixel_values_from_uint8(img)
    text = torch.tensor([ids[1:] + [info["V"] - 100, info["V"] - 7]] * 2)
    rounded = MicroVLA(cfg)
    tdt = torch.bfloat16 if dtype == "bf16" else torch.float32
    rounded.load_state_dict({k: v.to(tdt).float() for k, v in ref.state_dict().items()})
    rounded.eval()
    with torch.no_grad():
        a = exp.logits(pv, text)
        b = rounded.logits(pv, text)
        r = ref.logits(pv, text)
    d_round = (a - b).abs().max().item()
    d_f32 = (a - r).abs().max().item()
    same_argmax = (a.argmax(-1) == r.argmax(-1)).float().mean().item()
    print(f"self-check: {len(names)} tensors, names OK; max |logit diff| export vs checkpoint rounded to {dtype}: "
          f"{d_round:.3g}; vs unrounded f32 checkpoint: {d_f32:.3g} (logit range {r.min().item():.2f}..{r.max().item():.2f}),"
          f" argmax agreement {same_argmax:.4f}")
    assert d_round < 1e-4, "exported weights do not reproduce the checkpoint"
    return {"tensors": len(names), "max_abs_diff_rounded": d_round, "max_abs_diff_f32": d_f32,
            "argmax_agreement_vs_f32": same_argmax}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="tools/microvla/out/ckpt.pt")
    ap.add_argument("--out", default="models/microvla-libero")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()

    if not args.check_only:
        from safetensors.torch import save_file

        model, cfg, ck = load_ckpt_model(args.ckpt)
        os.makedirs(args.out, exist_ok=True)
        tdt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        sd = {k: v.detach().to(tdt).contiguous() for k, v in export_state_dict(model).items()}
        save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
        os.chmod(os.path.join(args.out, "model.safetensors"), 0o644)
        dtype_name = "bfloat16" if args.dtype == "bf16" else "float32"
        stats = ck["stats"]
        json.dump(make_config(cfg, stats, dtype_name), open(os.path.join(args.out, "config.json"), "w"), indent=2)
        json.dump(stats, open(os.path.join(args.out, "dataset_statistics.json"), "w"), indent=2)
        json.dump(preprocessor_config(cfg), open(os.path.join(args.out, "preprocessor_config.json"), "w"), indent=2)
        shutil.copy(os.path.join(os.path.dirname(args.ckpt), "tokenizer.json"), os.path.join(args.out, "tokenizer.json"))
        n = sum(v.numel() for v in sd.values())
        print(f"exported {len(sd)} tensors, {n} parameters, "
              f"{os.path.getsize(os.path.join(args.out, 'model.safetensors')) / 1e6:.1f} MB ({args.dtype}); "
              f"step {ck['step']}, {ck['used_s'] / 60:.1f} min of training")
    res = self_check(args.out, args.ckpt, args.dtype)
    json.dump(res, open(os.path.join(os.path.dirname(args.ckpt), "export_check.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
