#!/usr/bin/env python3
"""Train the micro OpenVLA-shaped policy on LIBERO episodes (resumable).

    nice -n 5 tools/.venv/bin/python tools/microvla/train.py --data tools/libero/out \
        --out tools/microvla/out --budget-min 60

The run is bounded by wall-clock training time (--budget-min): the learning-rate schedule
(linear warm-up, cosine decay to 10%) follows the fraction of the budget used, so the run ends
with a decayed learning rate however fast the shared CPU is. Checkpoints (out/ckpt.pt) hold the
model, optimiser, the time used so far and the statistics; rerunning the command resumes. New
episodes appearing in the data folder are picked up every --rescan-steps steps (statistics are
recomputed then, so targets follow the growing data; the exported statistics are the final ones).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    HERE, SUITES, MicroVLA, ModelCfg, preset_cfg, action_tokens, build_or_import_tokenizer, libero_to_openvla,
    load_tokenizer, normalize_actions, pixel_values_from_uint8, prompt_for, prompt_ids, tokenizer_info,
    unnorm_key,
)
from data import EpisodeStore, read_manifest  # noqa: E402


def all_instructions(data_dir):
    instr = json.load(open(os.path.join(HERE, "libero_instructions.json")))
    texts = [i for s in SUITES for i in instr[s]]
    texts += [r["instruction"] for r in read_manifest(data_dir) if "instruction" in r]
    fm = "/work/shared/libero_frames/manifest.json"
    if os.path.exists(fm):
        texts += [e["instruction"] for e in json.load(open(fm))]
    return list(dict.fromkeys(t.lower() for t in texts))


class Batcher:
    """Samples frames with equal total weight per suite; builds pixel values and token sequences."""

    def __init__(self, store: EpisodeStore, tok, info, stats, shift_px, rng, transition_weight=1.0,
                 transition_window=0):
        self.store, self.tok, self.info, self.rng = store, tok, info, rng
        self.transition_weight, self.transition_window = transition_weight, transition_window
        self.shift_px = shift_px
        self.V = info["V"]
        self.pad = info["V"]
        self.prompt_cache = {}
        self.rebuild(stats)

    def rebuild(self, stats):
        st = self.store
        self.stats = stats
        self.ep_tokens = []
        for i in range(len(st.files)):
            a = normalize_actions(libero_to_openvla(st.actions[i]), stats[unnorm_key(st.suite[i])])
            self.ep_tokens.append(action_tokens(a, self.V))
        ep_of, fr_of, w = [], [], []
        # equal total weight per task (per suite and task id): a long task does not crowd out a short one
        groups = [(st.suite[i], st.task[i]) for i in range(len(st.files))]
        per_group = {g: sum(len(st.frames[i]) for i in range(len(st.files)) if groups[i] == g) for g in set(groups)}
        for i in range(len(st.files)):
            n = len(st.frames[i])
            ep_of.append(np.full(n, i))
            fr_of.append(np.arange(n))
            w.append(np.full(n, 1.0 / per_group[groups[i]]) * self.transition_boost(st.actions[i]))
        self.ep_of = np.concatenate(ep_of)
        self.fr_of = np.concatenate(fr_of)
        self.w = np.concatenate(w)
        self.w /= self.w.sum()

    def transition_boost(self, actions):
        """Per-frame weight factor: `transition_weight` for frames within `transition_window` frames of a change
        of the gripper label (grasp and release, where a single frame decides and errors compound), else 1."""
        f = np.ones(len(actions))
        if self.transition_window <= 0 or self.transition_weight == 1.0 or len(actions) < 2:
            return f
        change = np.nonzero(np.diff(np.sign(actions[:, 6])) != 0)[0]
        for c in change:
            f[max(0, c + 1 - self.transition_window):c + 1 + self.transition_window] = self.transition_weight
        return f

    def pids(self, instr):
        if instr not in self.prompt_cache:
            self.prompt_cache[instr] = prompt_ids(self.tok, instr, self.info["space_id"])
            if 0 in self.prompt_cache[instr]:
                print(f"WARNING: <unk> in prompt for {instr!r}", flush=True)
        return self.prompt_cache[instr]

    def make(self, picks, augment):
        st = self.store
        imgs, seqs, starts = [], [], []
        for e, f in picks:
            img = torch.from_numpy(st.frames[e][f])
            if augment and self.shift_px > 0:
                p, S = self.shift_px, img.shape[0]
                padded = F.pad(img.permute(2, 0, 1)[None].float(), (p, p, p, p), mode="replicate")[0]
                dy, dx = self.rng.randint(0, 2 * p), self.rng.randint(0, 2 * p)
                img = padded[:, dy:dy + S, dx:dx + S].permute(1, 2, 0).to(torch.uint8)
            imgs.append(img)
            ids = self.pids(st.instruction[e])
            acts = self.ep_tokens[e][f].tolist()
            seqs.append(ids[1:] + acts + [2])  # ids after BOS, 7 action tokens, </s>
            starts.append(len(ids) - 1)  # index in seq of the first action token
        L = max(len(s) for s in seqs)
        text = torch.full((len(seqs), L), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            text[i, : len(s)] = torch.tensor(s)
        pv = pixel_values_from_uint8(torch.stack(imgs))
        return pv, text, torch.tensor(starts)

    def sample(self, n, augment=True):
        idx = self.np_rng.choice(len(self.w), size=n, p=self.w)
        return self.make([(int(self.ep_of[i]), int(self.fr_of[i])) for i in idx], augment)


def action_loss(model, pv, text, starts, n_vis, with_eos=True):
    h = model.hidden(pv, text)  # [B, 1 + n_vis + L, H]
    k = 8 if with_eos else 7
    # the token at text index j sits at sequence position 1 + n_vis + j and is predicted from the previous one
    pos = (n_vis + starts)[:, None] + torch.arange(k)[None]
    tgt_idx = starts[:, None] + torch.arange(k)[None]
    hs = torch.gather(h, 1, pos[..., None].expand(-1, -1, h.shape[-1]))
    logits = model.language_model.lm_head(hs).float()
    tgt = torch.gather(text, 1, tgt_idx)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    pred = logits.argmax(-1)
    acc = (pred[:, :7] == tgt[:, :7]).float().mean()
    l1 = (pred[:, :7] - tgt[:, :7]).abs().float().mean()  # mean bin distance
    return loss, acc, l1, pred, tgt


def load_init_weights(model, cfg, folder):
    """Weights of an exported model folder into `model`; another model size is refused (the run would not be
    the one asked for)."""
    from export import model_from_export

    src, src_cfg, _ = model_from_export(folder)
    if src_cfg.to_dict() != cfg.to_dict():
        sys.exit(f"train.py: --init-from {folder} is a model of another size ({src_cfg.to_dict()}) than --preset "
                 f"({cfg.to_dict()})")
    model.load_state_dict(src.state_dict())
    print(f"weights from {folder}", flush=True)


def parse_tasks(text):
    """'libero_goal:1,2,4,9' (several suites joined by ';') -> {(suite, task)}; '' -> None (every task)."""
    if not text:
        return None
    out = set()
    for part in text.split(";"):
        suite, ids = part.split(":")
        if suite not in SUITES:
            sys.exit(f"train.py: --tasks: unknown suite {suite!r}")
        out |= {(suite, int(t)) for t in ids.split(",") if t}
    return out


def lr_at(frac, base, warm_frac, floor=0.1):
    if frac < warm_frac:
        return base * max(frac / warm_frac, 0.01)
    p = min(1.0, (frac - warm_frac) / max(1e-9, 1 - warm_frac))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def check_resume(resume, args, cfg):
    """Refuse to resume a checkpoint on other data, another model size or other training settings:
    the run would silently mix two experiments. Growing data in the same folder is expected."""
    old = resume.get("args", {})
    problems = []
    if os.path.abspath(old.get("data", "")) != os.path.abspath(args.data):
        problems.append(f"data folder {old.get('data')!r} -> {args.data!r}")
    if resume.get("cfg") != cfg.to_dict():
        problems.append(f"model size {resume.get('cfg')} -> {cfg.to_dict()} (this code's ModelCfg)")
    for key in ("budget_min", "batch", "lr", "wd", "warm_frac", "stride", "shift_px", "seed", "merges_vocab",
                "preset", "tasks", "init_from", "transition_weight", "transition_window"):
        if key in old and old[key] != getattr(args, key):
            problems.append(f"--{key.replace('_', '-')} {old[key]} -> {getattr(args, key)}")
    if problems:
        sys.exit(f"train.py: {os.path.join(args.out, 'ckpt.pt')} belongs to another run: " + "; ".join(problems)
                 + ". Resume with the checkpoint's settings, or train into another --out.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tools/libero/out")
    ap.add_argument("--out", default="tools/microvla/out")
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-clock training budget (minutes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warm-frac", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--stride", type=int, default=2, help="keep every n-th non-no-op frame")
    ap.add_argument("--shift-px", type=int, default=6, help="random translation augmentation (0 = off)")
    ap.add_argument("--rescan-steps", type=int, default=200)
    ap.add_argument("--ckpt-min", type=float, default=4.0)
    ap.add_argument("--eval-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster than 2 on the shared 2-core machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-episodes", type=int, default=8, help="wait for this many train episodes")
    ap.add_argument("--merges-vocab", type=int, default=400)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    ap.add_argument("--init-from", default="", help="start from the weights of an exported model folder (export.py "
                    "layout, e.g. a committed bf16 checkpoint) instead of random ones; fresh optimiser and schedule")
    ap.add_argument("--transition-weight", type=float, default=1.0, help="sampling weight of frames near a gripper "
                    "change (1 = uniform)")
    ap.add_argument("--transition-window", type=int, default=0, help="frames on each side of a gripper change that "
                    "--transition-weight applies to")
    ap.add_argument("--preset", default="base", help="model size (common.preset_cfg): base, goal96")
    ap.add_argument("--tasks", default="", help="train on these tasks only, e.g. libero_goal:1,2,4,9 (default: all)")
    ap.add_argument("--heldout-data", default="", help="held-out frame set (heldout_runs.py --assemble) for the "
                    "held-out token accuracy (default: the 'heldout' split of --data)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    log_path = os.path.join(args.out, "train_log.jsonl")
    tok_path = os.path.join(args.out, "tokenizer.json")

    resume = torch.load(ckpt_path, weights_only=False) if os.path.exists(ckpt_path) else None
    if resume is None and args.init_from:
        shutil.copy(os.path.join(args.init_from, "tokenizer.json"), tok_path)
        print(f"tokenizer from {args.init_from}", flush=True)
    elif resume is None:
        texts = [prompt_for(t) for t in all_instructions(args.data)]
        _, src = build_or_import_tokenizer(texts, tok_path, args.merges_vocab)
        print(f"tokenizer from {src}: {len(texts)} prompts", flush=True)
    tok = load_tokenizer(tok_path)
    info = tokenizer_info(tok)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    cfg = preset_cfg(args.preset, info["V"])
    if resume:
        check_resume(resume, args, cfg)
        cfg = ModelCfg.from_dict(resume["cfg"])
    model = MicroVLA(cfg)
    if resume is None and args.init_from:
        load_init_weights(model, cfg, args.init_from)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "token" not in n and "pos_embed" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    step, used_s = 0, 0.0
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        step, used_s = resume["step"], resume["used_s"]
        print(f"resumed at step {step}, {used_s / 60:.1f} min used", flush=True)

    tasks = parse_tasks(args.tasks)
    size = cfg.dino.image_size
    store = EpisodeStore(args.data, "train", stride=args.stride, image_size=size, tasks=tasks)
    store.refresh()
    while len(store.files) < args.min_episodes:
        print(f"waiting for train episodes ({len(store.files)}/{args.min_episodes}) ...", flush=True)
        time.sleep(30)
        store.refresh()
    rng = random.Random(args.seed + step)
    batcher = Batcher(store, tok, info, store.stats(), args.shift_px, rng, args.transition_weight,
                      args.transition_window)
    batcher.np_rng = np.random.default_rng(args.seed + step)
    held = EpisodeStore(args.data, "heldout", stride=8, image_size=size, tasks=tasks)
    if args.heldout_data:
        held.load_heldout_set(args.heldout_data)
    else:
        held.refresh()
    print(f"data: {store.summary()}", flush=True)

    n_vis = model.n_patches
    budget = args.budget_min * 60
    last_ckpt = time.time()
    logf = open(log_path, "a")
    t_prev = time.time()
    run_loss = run_acc = None

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "used_s": used_s,
                    "cfg": cfg.to_dict(), "stats": batcher.stats, "files": list(store.files), "args": vars(args),
                    "tokenizer_V": info["V"]}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def held_eval(n=96):
        if not held.files:
            if args.heldout_data:
                return None
            held.refresh()
            if not held.files:
                return None
        hb = Batcher(held, tok, info, batcher.stats, 0, random.Random(0))
        hb.np_rng = np.random.default_rng(123)
        model.eval()
        with torch.no_grad():
            accs = []
            if args.heldout_data:  # every frame of the held-out set, in order
                picks = [(e, f) for e in range(len(held.files)) for f in range(len(held.frames[e]))]
                batches = [picks[i:i + 32] for i in range(0, len(picks), 32)]
            else:
                batches = [None] * max(1, n // 32)
            for b in batches:
                pv, text, starts = hb.sample(32, augment=False) if b is None else hb.make(b, augment=False)
                _, acc, l1, _, _ = action_loss(model, pv, text, starts, n_vis)
                accs.append((acc.item(), l1.item()))
        model.train()
        return float(np.mean([a for a, _ in accs])), float(np.mean([b for _, b in accs]))

    model.train()
    while used_s < budget and (args.max_steps == 0 or step < args.max_steps):
        if step % args.rescan_steps == 0 and step > 0:
            tf = os.path.join(args.out, "threads")  # thread count can be changed while running
            if os.path.exists(tf):
                torch.set_num_threads(int(open(tf).read().strip() or args.threads))
            if store.refresh():
                batcher.rebuild(store.stats())
                print(f"step {step}: data now {store.summary()}", flush=True)
        frac = used_s / budget
        lr = lr_at(frac, args.lr, args.warm_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        pv, text, starts = batcher.sample(args.batch)
        loss, acc, l1, _, _ = action_loss(model, pv, text, starts, n_vis)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        now = time.time()
        used_s += now - t_prev
        t_prev = now
        run_loss = loss.item() if run_loss is None else 0.95 * run_loss + 0.05 * loss.item()
        run_acc = acc.item() if run_acc is None else 0.95 * run_acc + 0.05 * acc.item()
        if step % 20 == 0:
            rec = {"step": step, "min": round(used_s / 60, 2), "lr": lr, "loss": round(loss.item(), 4),
                   "loss_ema": round(run_loss, 4), "acc_ema": round(run_acc, 4), "bin_dist": round(l1.item(), 2),
                   "gnorm": round(float(gn), 3), "frames": store.n_frames(), "episodes": len(store.files)}
            if step % args.eval_steps == 0:
                he = held_eval()
                if he:
                    rec["held_acc"], rec["held_bin_dist"] = round(he[0], 4), round(he[1], 2)
                t_prev = time.time()  # do not charge evaluation to the budget
            print(json.dumps(rec), flush=True)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if time.time() - last_ckpt > args.ckpt_min * 60:
            save()
            last_ckpt = time.time()
            t_prev = time.time()
    save()
    print(f"done: step {step}, {used_s / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
