"""Summarise tools/libero/out/manifest.jsonl: per-suite expert success rate, episodes and frames per split."""
import argparse
import json
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(os.path.join(args.out, "manifest.jsonl")) if l.strip()]
    by = defaultdict(lambda: {"n": 0, "ok": 0, "train": 0, "heldout": 0, "frames": 0, "sim_s": 0.0, "steps": 0,
                              "render_s": 0.0, "failed_tasks": set()})
    for r in rows:
        b = by[r["suite"]]
        b["n"] += 1
        b["ok"] += int(r["success"])
        b["steps"] += r["steps"]
        b["sim_s"] += r.get("sim_s", 0)
        b["render_s"] += r.get("render_s", 0)
        if r["success"]:
            b[r["split"]] += 1
            b["frames"] += r.get("frames", 0)
        else:
            b["failed_tasks"].add(r["task_id"])
    tot = defaultdict(float)
    print(f"{'suite':16s} {'success':>12s} {'train':>6s} {'heldout':>8s} {'frames':>7s}  failed task ids")
    for s in sorted(by):
        b = by[s]
        print(f"{s:16s} {b['ok']:4d}/{b['n']:<4d}{100 * b['ok'] / b['n']:3.0f}% {b['train']:6d} {b['heldout']:8d} "
              f"{b['frames']:7d}  {sorted(b['failed_tasks'])}")
        for k in ("n", "ok", "frames", "steps", "sim_s", "render_s"):
            tot[k] += b[k]
    print(f"total: {int(tot['ok'])}/{int(tot['n'])} successful, {int(tot['frames'])} frames; "
          f"sim {tot['steps'] / max(tot['sim_s'], 1e-9):.1f} steps/s, "
          f"render {tot['frames'] / max(tot['render_s'], 1e-9):.2f} frames/s")


if __name__ == "__main__":
    main()
