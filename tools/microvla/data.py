"""LIBERO episode loading for micro-VLA training (episodes written by tools/libero, see README)."""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ (jsonl_log)
from common import SUITES, compute_stats, libero_to_openvla, noop_mask, resize_frames, unnorm_key  # noqa: E402
from jsonl_log import read_rows  # noqa: E402


def read_manifest(data_dir):
    """The rows of DATA_DIR/manifest.jsonl ([] before the first): a line being written right now is skipped,
    damage before the last line is an error (jsonl_log)."""
    return read_rows(os.path.join(data_dir, "manifest.jsonl"))


def episode_path(data_dir, row):
    f = row["file"]
    return f if os.path.isabs(f) else os.path.join(data_dir, f)


class EpisodeError(Exception):
    """An episode file that cannot be trained on, with the reason."""


def load_episode(path, row):
    """frames uint8 [T,224,224,3], actions float32 [T,7], instruction; an EpisodeError when the file is
    missing, torn, or not the episode its manifest row names (another suite, task or init)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            frames = z["frames"]
            acts = z["actions"].astype(np.float32)
            instr = str(z["instruction"]) if "instruction" in z else row["instruction"]
            ident = {k: (str(z[k]) if k == "suite" else int(z[k])) for k in ("suite", "task_id", "init_id") if k in z}
    except Exception as exc:  # zipfile, OSError, ValueError, KeyError: all mean "cannot be read"
        raise EpisodeError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    for k, v in ident.items():
        if v != row.get(k):
            raise EpisodeError(f"{path}: holds {k}={v!r}, its manifest row says {row.get(k)!r}")
    if frames.ndim != 4 or frames.shape[1:] != (224, 224, 3) or frames.dtype != np.uint8:
        raise EpisodeError(f"{path}: frames are {frames.dtype} {frames.shape}, not uint8 [T,224,224,3]")
    if acts.ndim != 2 or acts.shape != (len(frames), 7):
        raise EpisodeError(f"{path}: {len(frames)} frames but actions of shape {acts.shape}")
    return frames, acts, instr


class EpisodeStore:
    """Train-split episodes kept in memory: every non-no-op transition's action (for statistics),
    frames subsampled with `stride` (for training)."""

    def __init__(self, data_dir, split="train", stride=2, only_success=True, image_size=224, tasks=None):
        """tasks: None (every episode) or a set of (suite, task_id) to keep; frames are resized to image_size."""
        self.data_dir = data_dir
        self.image_size = image_size
        self.tasks = tasks
        self.split = split
        self.stride = stride
        self.only_success = only_success
        self.files = []  # relative names in load order
        self.suite = []  # per episode
        self.task = []
        self.instruction = []
        self.frames = []  # per episode uint8 [n,S,S,3] (subsampled, no-ops removed, resized to image_size)
        self.actions = []  # per episode float32 [n,7] LIBERO convention, aligned with frames
        self.all_actions = []  # per episode float32 [m,7] all non-no-op actions (stats)
        self.skipped = 0
        self.bad = []  # why each skipped episode was refused
        self.bad_files = set()

    def refresh(self):
        """Load train episodes that appeared since the last call; returns the number added."""
        added = 0
        have = set(self.files) | self.bad_files
        for row in read_manifest(self.data_dir):
            if row.get("split", "train") != self.split or row["file"] in have:
                continue
            if self.only_success and not row.get("success", True):
                continue
            if self.tasks is not None and (row.get("suite"), int(row.get("task_id", -1))) not in self.tasks:
                continue
            p = episode_path(self.data_dir, row)
            try:
                frames, acts, instr = load_episode(p, row)
            except EpisodeError as exc:
                # Reported once and left on disk: the run goes on without it.
                self.skipped += 1
                self.bad.append(str(exc))
                self.bad_files.add(row["file"])
                have.add(row["file"])
                print(f"BAD episode skipped: {exc}", flush=True)
                continue
            keep = ~noop_mask(acts)
            idx = np.nonzero(keep)[0]
            sub = idx[:: self.stride]
            self.files.append(row["file"])
            self.suite.append(row["suite"])
            self.task.append(int(row["task_id"]))
            self.instruction.append(instr)
            self.frames.append(np.ascontiguousarray(resize_frames(frames[sub], self.image_size)))
            self.actions.append(acts[sub])
            self.all_actions.append(acts[idx])
            have.add(row["file"])
            added += 1
        return added

    def stats(self):
        out = {}
        for s in SUITES:
            eps = [i for i, su in enumerate(self.suite) if su == s]
            if not eps:
                continue
            a = np.concatenate([libero_to_openvla(self.all_actions[i]) for i in eps])
            out[unnorm_key(s)] = compute_stats(a, len(eps))
        return out

    def n_frames(self):
        return sum(len(f) for f in self.frames)

    def summary(self):
        d = {}
        for s in SUITES:
            eps = [i for i, su in enumerate(self.suite) if su == s]
            d[s] = {"episodes": len(eps), "frames": int(sum(len(self.frames[i]) for i in eps)),
                    "transitions": int(sum(len(self.all_actions[i]) for i in eps))}
        return d

    def load_heldout_set(self, folder):
        """Fill the store from a held-out frame set (tools/libero/heldout_runs.py --assemble: manifest.json and
        its PNGs), one pseudo-episode per held-out episode, frames resized to image_size; returns the number of
        episodes. A PNG the manifest names but the folder lacks is an EpisodeError."""
        import json
        from PIL import Image
        entries = json.load(open(os.path.join(folder, "manifest.json")))
        by_ep = {}
        for e in entries:
            if self.tasks is not None and (e["suite"], int(e["task_id"])) not in self.tasks:
                continue
            by_ep.setdefault(e["episode"], []).append(e)
        for ep, es in by_ep.items():
            frames = []
            for e in es:
                path = os.path.join(folder, e["file"])
                if not os.path.exists(path):
                    raise EpisodeError(f"{path}: named in {folder}/manifest.json but missing")
                frames.append(np.asarray(Image.open(path).convert("RGB")))
            frames = resize_frames(np.stack(frames), self.image_size)
            acts = np.array([e["expert_action"] for e in es], dtype=np.float32)
            self.files.append(ep)
            self.suite.append(es[0]["suite"])
            self.task.append(int(es[0]["task_id"]))
            self.instruction.append(es[0]["instruction"])
            self.frames.append(frames)
            self.actions.append(acts)
            self.all_actions.append(acts)
        return len(by_ep)

