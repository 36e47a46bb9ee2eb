"""Contact sheet of recorded frames: one row per episode (a few suites), frames sampled across the episode.

  tools/.venv-libero/bin/python tools/libero/contact_sheet.py [--out tools/libero/out] [--rows 8] [--cols 6]
Writes <out>/contact_sheet.png. Frames are shown exactly as stored (already rotated 180 degrees, RGB).
"""
import argparse
import glob
import os

import numpy as np
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args()
    by_suite = {}
    for p in sorted(glob.glob(os.path.join(args.out, "episodes", "*", "*.npz"))):
        by_suite.setdefault(os.path.basename(os.path.dirname(p)), []).append(p)
    if not by_suite:
        raise SystemExit("no episodes yet")
    picks = []  # round-robin over suites so every suite shows up
    while len(picks) < args.rows and any(by_suite.values()):
        for s in sorted(by_suite):
            if by_suite[s] and len(picks) < args.rows:
                picks.append(by_suite[s].pop(0))
    S, lab = args.size, 14
    sheet = Image.new("RGB", (args.cols * S, len(picks) * (S + lab)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, p in enumerate(picks):
        d = np.load(p)
        frames = d["frames"]
        idx = np.linspace(0, len(frames) - 1, args.cols).round().astype(int)
        for c, k in enumerate(idx):
            im = Image.fromarray(frames[k]).resize((S, S), Image.LANCZOS)
            sheet.paste(im, (c * S, r * (S + lab) + lab))
        title = f"{d['suite']} t{int(d['task_id'])} i{int(d['init_id'])} T={len(frames)}: {d['instruction']}"
        draw.text((2, r * (S + lab) + 1), title[:140], fill="black")
    dst = os.path.join(args.out, "contact_sheet.png")
    sheet.save(dst)
    print(dst, sheet.size)


if __name__ == "__main__":
    main()
