#!/usr/bin/env python3
"""Checks of the training data loader and the resume guard (no torch model is built):

    tools/.venv/bin/python tools/microvla/test_data.py

Bad episode files are refused with their reason and skipped (a torn file, one from another suite,
frames and actions of different lengths); a checkpoint is not resumed on another data folder,
model size or training setting.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ModelCfg  # noqa: E402
from data import EpisodeError, EpisodeStore, load_episode  # noqa: E402
import train  # noqa: E402


def write_episode(path, suite="libero_goal", task_id=1, init_id=12, t=4, actions_t=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, frames=np.zeros((t, 224, 224, 3), np.uint8),
                        actions=np.full((actions_t or t, 7), 0.1, np.float32), instruction=np.array("put it"),
                        suite=np.array(suite), task_id=np.array(task_id), init_id=np.array(init_id),
                        success=np.array(True))


def expect_error(fn, needle):
    try:
        fn()
    except (EpisodeError, SystemExit) as exc:
        assert needle in str(exc), f"{needle!r} not in {exc}"
        return
    raise AssertionError(f"no error (expected one about {needle!r})")


def main():
    d = tempfile.mkdtemp()
    row = {"suite": "libero_goal", "task_id": 1, "init_id": 12, "file": "libero_goal/task01_init12.npz",
           "split": "train", "success": True, "instruction": "put it"}
    good = os.path.join(d, row["file"])
    write_episode(good)
    frames, acts, _ = load_episode(good, row)
    assert frames.shape == (4, 224, 224, 3) and acts.shape == (4, 7)

    other = dict(row, file="libero_goal/task01_init13.npz", init_id=13)
    write_episode(os.path.join(d, other["file"]), suite="libero_10", init_id=13)
    expect_error(lambda: load_episode(os.path.join(d, other["file"]), other), "suite='libero_10'")

    torn = dict(row, file="libero_goal/task01_init14.npz", init_id=14)
    write_episode(os.path.join(d, torn["file"]), init_id=14)
    with open(os.path.join(d, torn["file"]), "r+b") as f:
        f.truncate(100)
    expect_error(lambda: load_episode(os.path.join(d, torn["file"]), torn), "cannot be read")

    short = dict(row, file="libero_goal/task01_init15.npz", init_id=15)
    write_episode(os.path.join(d, short["file"]), init_id=15, actions_t=3)
    expect_error(lambda: load_episode(os.path.join(d, short["file"]), short), "actions of shape")

    with open(os.path.join(d, "manifest.jsonl"), "w") as f:
        for r in (row, other, torn, short):
            f.write(json.dumps(r) + "\n")
    store = EpisodeStore(d, "train", stride=1)
    assert store.refresh() == 1 and store.files == [row["file"]], store.files
    assert store.skipped == 3 and len(store.bad) == 3, store.bad
    assert store.refresh() == 0 and store.skipped == 3  # reported once, not on every rescan

    args = argparse.Namespace(data=d, out=d, budget_min=40.0, batch=16, lr=6e-4, wd=0.05, warm_frac=0.05,
                              stride=1, shift_px=6, seed=0, merges_vocab=400)
    cfg = ModelCfg(base_vocab=551)
    resume = {"args": dict(vars(args)), "cfg": cfg.to_dict()}
    train.check_resume(resume, args, cfg)  # the same run: no error
    expect_error(lambda: train.check_resume(dict(resume, args=dict(vars(args), data="/elsewhere")), args, cfg),
                 "data folder")
    bigger = ModelCfg(base_vocab=551, hidden=384)
    expect_error(lambda: train.check_resume(resume, args, bigger), "model size")
    expect_error(lambda: train.check_resume(dict(resume, args=dict(vars(args), batch=32)), args, cfg), "--batch")
    print("test_data: OK (4 episode checks, store skip-and-report, 4 resume checks)")


if __name__ == "__main__":
    main()
