"""The resumable results file (JSONL, one line per finished episode, keyed by (suite, task, init, placement,
decoder)): loading, appending, and the checks that a resumed run is the same run."""
import sys

from generate import append_manifest
from jsonl_log import JsonlError, read_rows

from .episode import SEED


KEY_FIELDS = ("suite", "task_id", "init_id", "decoder")


def result_key(r):
    """(suite, task_id, init_id, placement, decoder); rows written before placements existed are placement 0."""
    return r["suite"], r["task_id"], r["init_id"], r.get("placement", 0), r["decoder"]


def load_results(path):
    """Finished episodes keyed by result_key; a torn last line (a killed run) is skipped, damage before it is an
    error (jsonl_log), and a later row of the same key replaces an earlier one (a rerun's)."""
    out = {}
    for n, row in enumerate(read_rows(path)):
        missing = [k for k in KEY_FIELDS if k not in row]
        if missing:
            raise JsonlError(f"{path}: row {n + 1} has no {', '.join(missing)}: not a closed-loop results row")
        out[result_key(row)] = row
    return out


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


SETUP_KEYS = ("model", "draft_head", "drafter")
FINGERPRINT_KEYS = ("model_fingerprint", "draft_head_fingerprint")


def check_server(done, path, server):
    """Refuse a results file of another server setup: another model, draft head or drafter, or the same folders
    with other files in them (the servers' checksums differ). Rows written before servers reported checksums are
    matched by name alone; their count is returned so the caller can say so."""
    unchecked = 0
    for key, r in done.items():
        old = r.get("server") or {}
        keys = SETUP_KEYS
        if all(k in old for k in FINGERPRINT_KEYS):
            keys = SETUP_KEYS + FINGERPRINT_KEYS
        else:
            unchecked += 1
        if any(old.get(k) != server.get(k) for k in keys):
            sys.exit(f"eval.py: {path} holds episodes of another server setup "
                     f"({ {k: old.get(k) for k in keys} }; now { {k: server.get(k) for k in keys} }, e.g. {key}): "
                     f"use another --results file")
    return unchecked
