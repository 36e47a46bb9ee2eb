"""The resumable results file (JSONL, one line per finished episode, keyed by (suite, task, init, decoder)):
loading, appending, and the checks that a resumed run is the same run."""
import json
import os
import sys

from generate import append_manifest

from .episode import SEED


def load_results(path):
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                rows[(r["suite"], r["task_id"], r["init_id"], r["decoder"])] = r
    return rows


def append_result(path, rec):
    """One line, appended and fsynced (generate.py's manifest writer): a killed run loses only the episode in
    flight."""
    append_manifest(path, rec)


def check_run_settings(done, path, scale, seed):
    """Refuse a results file of another --max-steps-scale or --seed."""
    for key, r in done.items():
        if r.get("max_steps_scale", 1.0) != scale or r.get("seed", SEED) != seed:
            sys.exit(f"eval.py: {path} holds episodes run with --max-steps-scale "
                     f"{r.get('max_steps_scale', 1.0)} --seed {r.get('seed', SEED)} (e.g. {key}); this run asks "
                     f"for {scale} / {seed}: use another --results file")


def check_server(done, path, server):
    """Refuse a results file of another server setup (model, draft head, drafter)."""
    for key, r in done.items():
        old = r.get("server") or {}
        if (old.get("model"), old.get("draft_head"), old.get("drafter")) != (
                server["model"], server["draft_head"], server["drafter"]):
            sys.exit(f"eval.py: {path} holds episodes of another server setup ({old}; now {server}): "
                     f"use another --results file")
