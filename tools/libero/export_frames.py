#!/usr/bin/env python3
"""Export recorded LIBERO episodes as PNG frames + manifest.json (the frames-folder format the
Rust tools read: a list of {file, instruction, suite, unnorm_key, task_id, init_id, step,
expert_action}).

    tools/.venv/bin/python tools/libero/export_frames.py --split train --stride 3 \
        --out tools/libero/out/train_frames

The Rust draft-head trainer reads this folder; it never needs Python itself.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ (jsonl_log)
from jsonl_log import read_rows  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE / "out")
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--stride", type=int, default=3, help="keep every n-th step of an episode")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "train_frames")
    ap.add_argument("--runs-per-episode", type=int, default=0,
                    help="instead of every --stride-th step: this many runs of --run-len consecutive steps per "
                         "episode, evenly spaced (frames carry `episode` and `step`, so drafters that read the "
                         "previous action can be measured on them)")
    ap.add_argument("--run-len", type=int, default=8)
    args = ap.parse_args()

    manifest = args.data / "manifest.jsonl"
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: run tools/libero/generate.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for ep in read_rows(manifest):
        if not ep.get("success") or not ep.get("file") or ep.get("split") != args.split:
            continue
        with np.load(args.data / ep["file"]) as z:
            frames, actions = z["frames"], z["actions"]
        if ep.get("frame_every", 1) != 1 and args.runs_per_episode:
            raise SystemExit(f"{ep['file']}: rendered every {ep['frame_every']} steps, not consecutive steps")
        if args.runs_per_episode:
            span = max(len(frames) - args.run_len, 0)
            starts = [round(span * (k + 0.5) / args.runs_per_episode) for k in range(args.runs_per_episode)]
            steps = sorted({t for s0 in starts for t in range(s0, min(s0 + args.run_len, len(frames)))})
        else:
            steps = range(0, len(frames), args.stride)
        # a noise-injected episode shares its suite, task and init with the clean one: its seed keeps
        # the two apart (else the second would take the first's frames under its own actions)
        noisy = f"_n{ep['noise_seed']:02d}" if ep.get("noisy") else ""
        for t in steps:
            name = f"{ep['suite']}_t{ep['task_id']:02d}_i{ep['init_id']:02d}{noisy}_s{t:03d}.png"
            if not (args.out / name).exists():
                Image.fromarray(frames[t]).save(args.out / name)
            entries.append({
                "file": name, "instruction": ep["instruction"], "suite": ep["suite"],
                "unnorm_key": f"{ep['suite']}_no_noops", "task_id": ep["task_id"], "init_id": ep["init_id"],
                "step": t * ep.get("frame_every", 1), "expert_action": [float(x) for x in actions[t]],
                "episode": f"{ep['suite']}/task{ep['task_id']:02d}_init{ep['init_id']:02d}{noisy}",
            })
    (args.out / "manifest.json").write_text(json.dumps(entries, indent=1))
    print(f"{len(entries)} frames from {args.split} episodes -> {args.out}")


if __name__ == "__main__":
    main()
