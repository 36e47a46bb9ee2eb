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


def merge_baseline(rows, path, baseline_path, decoders=("plain",)):
    """rows plus the `decoders` episodes of another results file of the same model, for a run whose server added
    a draft head: plain decoding never calls the draft head or drafter, so those episodes are what this server's
    would be. Refused: a baseline of another model (name or checksum), another step-limit scale or seed, one
    whose episodes the results file also holds, or one whose scene, initial state or step limit differs from this
    file's episodes of the same (suite, task, init, placement). Merged rows carry `baseline: <baseline_path>`."""
    base = load_results(baseline_path)
    own = [r for r in rows.values() if not r.get("baseline")]
    if not own:
        sys.exit(f"eval.py: --baseline: {path} holds no episodes to pair with {baseline_path}'s")
    model = {k: own[0].get("server", {}).get(k) for k in ("model", "model_fingerprint")}
    if model["model_fingerprint"] is None:
        sys.exit(f"eval.py: --baseline: {path}'s rows carry no model checksum; a baseline cannot be checked")
    check_run_settings(base, baseline_path, own[0].get("max_steps_scale", 1.0), own[0].get("seed", SEED))
    scenes = {}
    for key, r in rows.items():
        scenes.setdefault(key[:-1], r)
    merged = dict(rows)
    for key, r in base.items():
        if key[-1] not in decoders:
            continue
        theirs = {k: (r.get("server") or {}).get(k) for k in model}
        if theirs != model:
            sys.exit(f"eval.py: --baseline: {baseline_path} holds episodes of another model ({theirs}; "
                     f"{path} has {model}, e.g. {key})")
        if key in rows:
            sys.exit(f"eval.py: --baseline: {key} is in both {path} and {baseline_path}: one source per episode")
        mine = scenes.get(key[:-1])
        moved = [f for f in ("scene_sha1", "init_sha1", "max_steps") if mine is not None and mine.get(f) != r.get(f)]
        if moved:
            sys.exit(f"eval.py: --baseline: {key} of {baseline_path} has another {', '.join(moved)} than {path}'s "
                     f"episodes of that initial state: they would not be pairs")
        merged[key] = dict(r, baseline=baseline_path)
    return merged
