"""The resumable results file (JSONL, one line per finished episode, keyed by (suite, task, init, decoder)):
loading, appending, and the checks that a resumed run is the same run."""
import sys

from generate import append_manifest
from jsonl_log import read_keyed

from .episode import SEED


def load_results(path):
    """Finished episodes keyed by (suite, task_id, init_id, decoder); a torn last line (a killed run) is
    skipped, damage before it is an error (jsonl_log)."""
    return read_keyed(path, ("suite", "task_id", "init_id", "decoder"))


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
