"""Held-out action-token accuracy of exported models on a held-out frame set (teacher-forced, as train.py's
held-out evaluation), for the points of a training curve measured after training.

  tools/.venv/bin/python tools/microvla/heldout_accuracy.py --set data/libero_goal_heldout \
      --tasks libero_goal:1 tools/microvla/out_gate/model models/microvla-goal-task1

Per model: frames, exact-token accuracy over the 7 action tokens, mean bin distance, and the open/close
agreement of the gripper token.
"""
import argparse
import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_tokenizer, tokenizer_info  # noqa: E402
from data import EpisodeStore  # noqa: E402
from export import model_from_export  # noqa: E402
from train import Batcher, action_loss, parse_tasks  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="exported model folders")
    ap.add_argument("--set", required=True, help="held-out frame set (heldout_runs.py --assemble)")
    ap.add_argument("--tasks", default="", help="only these tasks, e.g. libero_goal:1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for folder in args.models:
        model, cfg, _ = model_from_export(folder)
        tok = load_tokenizer(os.path.join(folder, "tokenizer.json"))
        info = tokenizer_info(tok)
        stats = json.load(open(os.path.join(folder, "dataset_statistics.json")))
        held = EpisodeStore(args.set, "heldout", image_size=cfg.dino.image_size, tasks=parse_tasks(args.tasks))
        held.load_heldout_set(args.set)
        batcher = Batcher(held, tok, info, stats, 0, random.Random(0))
        picks = [(e, f) for e in range(len(held.files)) for f in range(len(held.frames[e]))]
        if not picks:
            sys.exit(f"heldout_accuracy.py: no frame of {args.tasks or 'any task'} in {args.set}")
        preds, targets = [], []
        with torch.no_grad():
            for i in range(0, len(picks), 40):
                pv, text, starts = batcher.make(picks[i:i + 40], augment=False)
                _, _, _, pred, tgt = action_loss(model, pv, text, starts, model.n_patches)
                preds.append(pred[:, :7])
                targets.append(tgt[:, :7])
        P, T = torch.cat(preds), torch.cat(targets)
        V = info["V"]
        grip = (((V - P[:, 6]) > 192) == ((V - T[:, 6]) > 192)).float().mean().item()
        print(f"{folder}: {len(picks)} frames, held-out token accuracy {(P == T).float().mean().item():.4f}, "
              f"mean bin distance {(P - T).abs().float().mean().item():.2f}, gripper open/close agreement "
              f"{grip:.4f}")


if __name__ == "__main__":
    main()
