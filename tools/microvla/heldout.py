#!/usr/bin/env python3
"""Build the held-out evaluation set from 'heldout' episodes and score the exported model on it.

    tools/.venv/bin/python tools/microvla/heldout.py --data tools/libero/out \
        --model models/microvla-libero --out data/libero_heldout --per-episode 6

Frames are spread over the held-out episodes (init states never used for training) and over each
episode's time steps. The model is the exported checkpoint (model.safetensors upcast to float32,
built from config.json alone), decoded greedily by full recompute (no KV cache): 7 forward passes,
each over [BOS] + vision + prompt + the tokens chosen so far, argmax over all V+64 logits.
model_action is what OpenVLA's predict_action returns: dims 0-5 un-normalised with the suite's
q01/q99, the gripper as the bin centre in OpenVLA's [0,1] convention (about 1 = open, 0 = close).
For action L1 the gripper is mapped to LIBERO's convention as run_libero_eval does
(sign(2g-1), then inverted: -1 open / +1 close) and compared with the expert's ±1.

    tools/.venv/bin/python tools/microvla/heldout.py --rescore --model models/microvla-libero \
        --out data/libero_heldout

re-scores the committed frames (their PNGs and manifest entries; no episodes needed) with the
model as it is now, e.g. after `examples/pack_embedded.rs` rounded its weights: the expert's
tokens (and `previous_expert_tokens` where an entry has `previous_action`) under the model's
statistics, the model's greedy tokens, margins and actions in manifest.json, and metrics.json.
This is also the last step of building the committed set: `data/libero_heldout/` is made by
`tools/libero/heldout_runs.py` (runs of consecutive steps from the evaluation-only init states
0-9; see tools/libero/README.md), which leaves these fields null. The default mode below (frames
from generate.py's 'heldout' split, init 49) is the old way and no longer makes the committed set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SUITES, action_tokens, decode_tokens, libero_to_openvla, load_tokenizer, normalize_actions,
    openvla_gripper_to_libero, pixel_values_from_uint8, prompt_ids, tokenizer_info, unnorm_key,
)
from data import episode_path, read_manifest  # noqa: E402
from export import model_from_export  # noqa: E402


@torch.no_grad()
def greedy(model, pv, prompt, n=7):
    """Full-recompute greedy decoding for a batch of frames sharing one prompt."""
    B = pv.shape[0]
    text = torch.tensor([prompt[1:]] * B, dtype=torch.long)
    toks, margins = [], []
    for _ in range(n):
        logits = model.logits(pv, text)[:, -1].float()
        top = torch.topk(logits, 2, dim=-1)
        nxt = top.indices[:, 0]
        toks.append(nxt)
        margins.append(top.values[:, 0] - top.values[:, 1])
        text = torch.cat([text, nxt[:, None]], dim=1)
    return torch.stack(toks, 1).numpy(), torch.stack(margins, 1).numpy()


def write_metrics(entries, args):
    """metrics.json: per suite, the model's greedy tokens and actions against the expert's."""
    metrics = {"model": args.model, "n_frames": len(entries), "decoding": "greedy, full recompute, float32",
               "gripper_l1": "model gripper mapped to LIBERO convention (sign(2g-1), inverted) vs expert ±1",
               "per_suite": {}}
    for suite in SUITES + ["all"]:
        es = [e for e in entries if suite == "all" or e["suite"] == suite]
        if not es:
            continue
        et = np.array([e["expert_tokens"] for e in es])
        mt = np.array([e["model_greedy_tokens"] for e in es])
        ea = np.array([e["expert_action"] for e in es])
        ma = np.array([e["model_action"] for e in es])
        mg = openvla_gripper_to_libero(ma[:, 6])
        l1_arm = np.abs(ma[:, :6] - ea[:, :6])
        l1_g = np.abs(mg - ea[:, 6])
        metrics["per_suite"][suite] = {
            "frames": len(es),
            "token_accuracy": float((et == mt).mean()),
            "token_accuracy_per_dim": [float(x) for x in (et == mt).mean(0)],
            "token_within_1_bin": float((np.abs(et - mt) <= 1).mean()),
            "all_7_tokens_exact": float((et == mt).all(1).mean()),
            "mean_abs_bin_error": float(np.abs(et - mt).mean()),
            "action_l1_all7": float(np.concatenate([l1_arm, l1_g[:, None]], 1).mean()),
            "action_l1_dims0to5": float(l1_arm.mean()),
            "gripper_accuracy": float((mg == ea[:, 6]).mean()),
            "mean_top2_margin": float(np.array([e["model_top2_margins"] for e in es]).mean()),
        }
        # Consecutive-step sets (tools/libero/heldout_runs.py): how far copying the previous expert action
        # gets a drafter, against the expert's tokens and the model's greedy tokens.
        ep = [e for e in es if e.get("previous_expert_tokens") is not None]
        if ep:
            pt = np.array([e["previous_expert_tokens"] for e in ep])
            m = metrics["per_suite"][suite]
            m["episodes"] = len({e["episode"] for e in es if "episode" in e})
            m["frames_with_previous_action"] = len(ep)
            m["previous_expert_tokens_eq_expert_tokens"] = float(
                (pt == np.array([e["expert_tokens"] for e in ep])).mean())
            m["previous_expert_tokens_eq_model_greedy_tokens"] = float(
                (pt == np.array([e["model_greedy_tokens"] for e in ep])).mean())
            m["previous_expert_tokens_eq_model_greedy_tokens_per_dim"] = [
                float(x) for x in (pt == np.array([e["model_greedy_tokens"] for e in ep])).mean(0)]
    json.dump(metrics, open(os.path.join(args.out, "metrics.json"), "w"), indent=1)
    print(json.dumps(metrics["per_suite"], indent=1))


def rescore(args):
    """Recompute the model's tokens, margins and actions for the committed frames."""
    model, cfg, conf = model_from_export(args.model)
    tok = load_tokenizer(os.path.join(args.model, "tokenizer.json"))
    info = tokenizer_info(tok)
    stats = json.load(open(os.path.join(args.model, "dataset_statistics.json")))
    path = os.path.join(args.out, "manifest.json")
    entries = json.load(open(path))
    changed = 0
    V = info["V"]

    def expert_tokens(a, st):
        return [int(x) for x in action_tokens(normalize_actions(libero_to_openvla(np.asarray(a)[None]), st), V)[0]]

    for e in entries:
        st = stats[e["unnorm_key"]]
        # the expert's tokens (and the previous action's, where the manifest has one) under the model's statistics
        e["expert_tokens"] = expert_tokens(e["expert_action"], st)
        if "previous_action" in e:
            prev = e["previous_action"]
            e["previous_expert_tokens"] = None if prev is None else expert_tokens(prev, st)
        png = os.path.join(args.out, e["file"])
        if not os.path.isfile(png):
            sys.exit(f"{png}: manifest entry without its frame")
        frame = np.asarray(Image.open(png).convert("RGB"))
        if frame.shape[:2] != (cfg.dino.image_size, cfg.dino.image_size):
            sys.exit(f"{png}: a {frame.shape[1]}x{frame.shape[0]} frame, the model takes {cfg.dino.image_size} px: "
                     f"assemble the set with heldout_runs.py --size {cfg.dino.image_size}")
        pv = pixel_values_from_uint8(torch.from_numpy(np.ascontiguousarray(frame[None])))
        toks, margins = greedy(model, pv, prompt_ids(tok, e["instruction"], info["space_id"]))
        new = [int(x) for x in toks[0]]
        changed += new != e["model_greedy_tokens"]
        e["model_greedy_tokens"] = new
        e["model_top2_margins"] = [float(x) for x in margins[0]]
        e["model_action"] = [float(x) for x in decode_tokens(toks[0], V, st)]
    json.dump(entries, open(path, "w"), indent=1)
    write_metrics(entries, args)
    print(f"re-scored {len(entries)} frames; the greedy tokens changed on {changed}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tools/libero/out")
    ap.add_argument("--model", default="models/microvla-libero")
    ap.add_argument("--out", default="data/libero_heldout")
    ap.add_argument("--per-episode", type=int, default=6)
    ap.add_argument("--min-per-suite", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rescore", action="store_true", help="re-score the committed frames only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rescore:
        return rescore(args)
    rng = np.random.default_rng(args.seed)

    model, cfg, conf = model_from_export(args.model)
    tok = load_tokenizer(os.path.join(args.model, "tokenizer.json"))
    info = tokenizer_info(tok)
    V = info["V"]
    stats = json.load(open(os.path.join(args.model, "dataset_statistics.json")))
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(".png"):
            os.remove(os.path.join(args.out, f))

    rows = [r for r in read_manifest(args.data) if r.get("split") == "heldout" and r.get("success") and r.get("file")]
    entries, k = [], 0
    for suite in SUITES:
        eps = sorted([r for r in rows if r["suite"] == suite], key=lambda r: (r["task_id"], r["init_id"]))
        if not eps:
            print(f"{suite}: no held-out episodes")
            continue
        if unnorm_key(suite) not in stats:
            print(f"{suite}: no statistics in the model (no training data) -- skipped")
            continue
        per = max(args.per_episode, -(-args.min_per_suite // len(eps)))
        for r in eps:
            z = np.load(episode_path(args.data, r))
            frames, acts = z["frames"], z["actions"].astype(np.float32)
            instr = str(z["instruction"])
            T = len(frames)
            # evenly spread time steps with a little jitter, distinct
            base = (np.arange(per) + 0.5) * T / per
            steps = np.clip((base + rng.uniform(-0.3, 0.3, per) * T / per).astype(int), 0, T - 1)
            steps = np.unique(steps)
            pv = pixel_values_from_uint8(torch.from_numpy(np.ascontiguousarray(frames[steps])))
            pr = prompt_ids(tok, instr, info["space_id"])
            toks, margins = greedy(model, pv, pr)
            st = stats[unnorm_key(suite)]
            for j, t in enumerate(steps):
                a = acts[t]
                exp_tok = action_tokens(normalize_actions(libero_to_openvla(a[None]), st), V)[0]
                m_act = decode_tokens(toks[j], V, st)
                name = f"{k:04d}.png"
                Image.fromarray(frames[t]).save(os.path.join(args.out, name), optimize=True)
                entries.append({
                    "file": name, "suite": suite, "unnorm_key": unnorm_key(suite), "task_id": int(r["task_id"]),
                    "init_id": int(r["init_id"]), "step": int(t), "instruction": instr,
                    "expert_action": [float(x) for x in a],
                    "expert_tokens": [int(x) for x in exp_tok],
                    "model_greedy_tokens": [int(x) for x in toks[j]],
                    "model_top2_margins": [float(x) for x in margins[j]],
                    "model_action": [float(x) for x in m_act],
                })
                k += 1
        print(f"{suite}: {len(eps)} episodes, {sum(e['suite'] == suite for e in entries)} frames", flush=True)
    json.dump(entries, open(os.path.join(args.out, "manifest.json"), "w"), indent=1)

    write_metrics(entries, args)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {len(entries)} frames, {size / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
