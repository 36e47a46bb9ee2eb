#!/usr/bin/env python3
"""Write a tiny draft head in Spec-VLA's released format for the fixture model.

Spec-VLA saves its EAGLE head as `pytorch_model.bin` (a torch pickle of the state dict of its
`MMModel`: `fc.{weight,bias}`, `layers.0.*` including an unused `input_layernorm`, and the frozen
`embed_tokens.weight`) next to a Hugging Face `LlamaConfig` `config.json` with one layer. This
script writes such a folder for tests/fixtures/tiny_openvla (hidden 64), plus the same tensors
as safetensors, so the Rust test can check that the pickle loads to the very same weights.

    tools/.venv/bin/python tools/reference/make_specvla_draft.py
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "specvla_draft"


def main() -> None:
    cfg = json.loads((REPO / "tests/fixtures/tiny_openvla/config.json").read_text())["text_config"]
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    g = torch.Generator().manual_seed(5)

    def rnd(*shape, std=None):
        std = std if std is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g) * std).to(torch.float16)

    sd = {
        "fc.weight": rnd(h, 2 * h), "fc.bias": rnd(h, std=0.1),
        "layers.0.self_attn.q_proj.weight": rnd(nh * hd, h),
        "layers.0.self_attn.k_proj.weight": rnd(nkv * hd, h),
        "layers.0.self_attn.v_proj.weight": rnd(nkv * hd, h),
        "layers.0.self_attn.o_proj.weight": rnd(h, nh * hd),
        "layers.0.mlp.gate_proj.weight": rnd(i, h), "layers.0.mlp.up_proj.weight": rnd(i, h),
        "layers.0.mlp.down_proj.weight": rnd(h, i),
        "layers.0.input_layernorm.weight": torch.ones(h, dtype=torch.float16),
        "layers.0.post_attention_layernorm.weight": (1 + 0.1 * torch.randn(h, generator=g)).to(torch.float16),
        "embed_tokens.weight": rnd(cfg["vocab_size"], h, std=1.0),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(sd, OUT / "pytorch_model.bin")  # Spec-VLA saves fp16 state dicts
    save_file({k: v.contiguous() for k, v in sd.items() if k != "embed_tokens.weight"},
              str(OUT / "reference.safetensors"))
    hf = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": i, "num_attention_heads": nh, "num_key_value_heads": nkv,
        "num_hidden_layers": 1, "rms_norm_eps": 1e-6, "max_position_embeddings": cfg["max_position_embeddings"],
        "rope_theta": 10000.0, "vocab_size": cfg["vocab_size"], "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "float16",
    }
    (OUT / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
