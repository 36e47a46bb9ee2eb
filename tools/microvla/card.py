#!/usr/bin/env python3
"""Write models/microvla-libero/README.md (model card) from the training log, checkpoint, export
self-check and held-out metrics.

    tools/.venv/bin/python tools/microvla/card.py --ckpt tools/microvla/out/ckpt.pt \
        --model models/microvla-libero --heldout data/libero_heldout
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SUITES  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="tools/microvla/out/ckpt.pt")
    ap.add_argument("--model", default="models/microvla-libero")
    ap.add_argument("--heldout", default="data/libero_heldout")
    ap.add_argument("--notes", default="", help="extra markdown appended to the card")
    args = ap.parse_args()

    out_dir = os.path.dirname(args.ckpt)
    ck = torch.load(args.ckpt, weights_only=False, map_location="cpu")
    log = [json.loads(l) for l in open(os.path.join(out_dir, "train_log.jsonl"))]
    # keep the last record per step (a resumed run may repeat a step)
    by_step = {r["step"]: r for r in log}
    log = [by_step[s] for s in sorted(by_step)]
    chk = json.load(open(os.path.join(out_dir, "export_check.json")))
    met = json.load(open(os.path.join(args.heldout, "metrics.json")))
    conf = json.load(open(os.path.join(args.model, "config.json")))
    stats = json.load(open(os.path.join(args.model, "dataset_statistics.json")))
    size = os.path.getsize(os.path.join(args.model, "model.safetensors"))
    tc = conf["text_config"]
    vt = conf["vision_towers"]

    n = len(log)
    picks = sorted({0, n // 8, n // 4, 3 * n // 8, n // 2, 5 * n // 8, 3 * n // 4, 7 * n // 8, n - 1})
    curve = "\n".join(
        f"| {log[i]['step']} | {log[i]['min']:.1f} | {log[i]['lr']:.2e} | {log[i]['loss_ema']:.3f} | {log[i]['acc_ema']:.3f} | {log[i]['episodes']} | {log[i]['frames']} |"
        for i in picks)
    held_curve = ", ".join(f"step {r['step']}: {r['held_acc']:.3f}" for r in log if "held_acc" in r)

    data_rows = "\n".join(
        f"| `{k}` | {v['num_trajectories']} | {v['num_transitions']} |" for k, v in stats.items())
    ps = met["per_suite"]
    held_rows = "\n".join(
        f"| {s} | {ps[s]['frames']} | {ps[s]['token_accuracy']:.3f} | {ps[s]['token_within_1_bin']:.3f} | "
        f"{ps[s]['all_7_tokens_exact']:.3f} | {ps[s]['action_l1_dims0to5']:.4f} | {ps[s]['gripper_accuracy']:.3f} | "
        f"{ps[s]['action_l1_all7']:.4f} |"
        for s in SUITES + ["all"] if s in ps)
    per_dim = " / ".join(f"{x:.2f}" for x in ps["all"]["token_accuracy_per_dim"])

    card = f"""# microvla-libero: a small OpenVLA-shaped LIBERO policy

A {chk['tensors']}-tensor, {ck_params(ck):,}-parameter model with OpenVLA's architecture
(`no-align+fused-gelu-mlp`, DINOv2-style + SigLIP-style towers, Llama LLM) and OpenVLA's action
pipeline, trained from scratch on scripted-expert LIBERO demonstrations, in the published OpenVLA
checkpoint layout (`docs/checkpoint_layout.md`; tower sizes in the `vision_towers` extension).
It is a test/benchmark model for speculative decoding, not a capable policy.

## Files

`config.json`, `model.safetensors` ({conf['torch_dtype']}, {size / 1e6:.1f} MB; trained in float32 and
rounded), `tokenizer.json`, `dataset_statistics.json` (keys `<suite>_no_noops`), `preprocessor_config.json`.

## Architecture

| part | size |
|---|---|
| DINOv2-style tower (`featurizer`) | {vt[0]['embed_dim']} wide, {vt[0]['depth']} deep, {vt[0]['num_heads']} heads, MLP {vt[0]['mlp_hidden_dim']}, patch {vt[0]['patch_size']}, cls + {vt[0]['num_register_tokens']} registers, LayerScale |
| SigLIP-style tower (`fused_featurizer`) | {vt[1]['embed_dim']} wide, {vt[1]['depth']} deep, {vt[1]['num_heads']} heads, MLP {vt[1]['mlp_hidden_dim']}, patch {vt[1]['patch_size']}, no prefix tokens, no LayerScale |
| features | patch tokens after block depth-2, no final norm, 64 patches, {vt[0]['embed_dim'] + vt[1]['embed_dim']} wide (DINO first) |
| projector | fused GELU MLP {vt[0]['embed_dim'] + vt[1]['embed_dim']} -> {4 * (vt[0]['embed_dim'] + vt[1]['embed_dim'])} -> {tc['hidden_size']} -> {tc['hidden_size']} |
| LLM | Llama, hidden {tc['hidden_size']}, {tc['num_hidden_layers']} layers, {tc['num_attention_heads']} heads (kv {tc['num_key_value_heads']}), intermediate {tc['intermediate_size']}, RMS eps {tc['rms_norm_eps']}, rope theta {tc['rope_theta']}, vocab {tc['vocab_size']} (V = {conf['pad_token_id']} + 64), untied |

Tokenizer: BPE trained on the 40 LIBERO prompts (`tools/reference/build_tokenizer.py`), V =
{conf['pad_token_id']}; action tokens are ids {conf['pad_token_id'] - 256}..{conf['pad_token_id'] - 1}
(bin b -> id V - b), `<PAD>` = V, `▁` appended after the prompt as OpenVLA does.
Input: the full 224x224 frame (180°-rotated agentview, as OpenVLA's LIBERO pipeline), no centre crop
(training used no random-resized crop, only a ±6 px random translation).

## Data

Scripted-expert episodes from `tools/libero/` (successful episodes of the `train` split; held-out
init states never used). Statistics per suite (`dataset_statistics.json`; gripper transformed to
[0,1] with 1 = open, mask false; proprio zeros):

| key | train episodes | transitions |
|---|---|---|
{data_rows}

The data generator was still running (and paused for a while) during training, so episodes
entered the training set progressively (see the `episodes` column below); the statistics were
recomputed whenever data arrived and the exported ones are the final ones.

## Training

{ck['step']} steps of batch 16 ({ck['step'] * 16:,} samples), {ck['used_s'] / 60:.1f} min of
training on 1 CPU thread (2-core machine shared with the LIBERO generator and Rust builds), AdamW lr
{ck['args']['lr']} (5% warm-up, cosine to 10% over the wall-clock budget), wd {ck['args']['wd']}, clip 1.0, fp32,
seed 0. Loss: cross-entropy on the 7 action tokens + `</s>`. Command and code: `tools/microvla/`.

| step | min | lr | loss (EMA) | action-token acc (EMA, train) | train episodes | train frames |
|---|---|---|---|---|---|---|
{curve}

Held-out teacher-forced token accuracy during training (96 frames): {held_curve}.

## Held-out evaluation (`data/libero_heldout/`)

{met['n_frames']} frames from held-out-init episodes; greedy decoding by full recompute with this
export (bf16 weights in float32). Token accuracy = greedy token equals the expert action's token.
Action L1 in un-normalised LIBERO units; gripper mapped to LIBERO's ±1 as `run_libero_eval` does.

| suite | frames | token acc | within 1 bin | all 7 exact | L1 dims 0-5 | gripper acc | L1 all 7 |
|---|---|---|---|---|---|---|---|
{held_rows}

Per-dimension token accuracy (all suites): {per_dim}. Mean top-1/top-2 logit margin:
{ps['all']['mean_top2_margin']:.2f}.

## Export self-check

`tools/microvla/export.py` rebuilds the model from `config.json` alone, loads `model.safetensors`
with plain `safetensors`, and compares logits with the training checkpoint: max |diff| vs the
checkpoint rounded to {conf['torch_dtype']}: {chk['max_abs_diff_rounded']:.3g}; vs the unrounded
float32 checkpoint: {chk['max_abs_diff_f32']:.3g} (argmax agreement {chk['argmax_agreement_vs_f32']:.4f}).
{args.notes}
"""
    open(os.path.join(args.model, "README.md"), "w").write(card)
    print(card)


def ck_params(ck):
    return sum(v.numel() for v in ck["model"].values())


if __name__ == "__main__":
    main()
