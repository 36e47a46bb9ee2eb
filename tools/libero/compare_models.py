"""Paired closed-loop comparison of two models (two eval.py results files) under one decoder.

  tools/.venv-libero/bin/python tools/libero/compare_models.py \
      --ref data/closed_loop/goal4.jsonl --new data/closed_loop/goal4_v2.jsonl [--decoder plain] [--json OUT]

Episodes pair on (suite, task, init, placement): the same initial state and fixture placement, which the rows'
`init_sha1` and `scene_sha1` must confirm (a pair whose scene or initial state differs, or whose step limit
differs, is an error: the two runs did not follow the same protocol). Prints, overall and per task, each model's
successes with the 95% Wilson interval, the discordant pairs, and the difference new - ref with its paired
95% interval (Newcombe's method 10, closed_loop/compare.py).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from closed_loop.compare import newcombe_paired, wilson_exact  # noqa: E402
from closed_loop.results import load_results  # noqa: E402


class PairingError(ValueError):
    pass


def pairs_of(ref_rows, new_rows, decoder):
    """[(key, ref_row, new_row)] for the episodes of `decoder` both files hold, checked to be the same episode
    setting."""
    out = []
    for key, new in sorted(new_rows.items()):
        if key[4] != decoder or key not in ref_rows:
            continue
        ref = ref_rows[key]
        for field in ("init_sha1", "scene_sha1", "max_steps", "unnorm_key"):
            if ref.get(field) != new.get(field):
                raise PairingError(f"{key[:4]}: {field} differs ({ref.get(field)!r} vs {new.get(field)!r}): "
                                   "not the same episode setting")
        out.append((key, ref, new))
    return out


def summary(pairs):
    both = sum(1 for _, r, n in pairs if r["success"] and n["success"])
    ref_only = sum(1 for _, r, n in pairs if r["success"] and not n["success"])
    new_only = sum(1 for _, r, n in pairs if n["success"] and not r["success"])
    neither = len(pairs) - both - ref_only - new_only
    k_ref, k_new, n = both + ref_only, both + new_only, len(pairs)
    lo, hi = newcombe_paired(both, new_only, ref_only, neither)
    return {"pairs": n, "ref_successes": k_ref, "new_successes": k_new,
            "ref_wilson95": wilson_exact(k_ref, n), "new_wilson95": wilson_exact(k_new, n),
            "ref_only": ref_only, "new_only": new_only,
            "difference": (k_new - k_ref) / n if n else None, "difference_paired95": (lo, hi)}


def fmt(s):
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}"  # noqa: E731
    d = s["difference"]
    lo, hi = s["difference_paired95"]
    diff = "-" if d is None else f"{100 * d:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) points"
    return (f"ref {s['ref_successes']}/{s['pairs']} ({pct(s['ref_wilson95'][0])}-{pct(s['ref_wilson95'][1])}%), "
            f"new {s['new_successes']}/{s['pairs']} ({pct(s['new_wilson95'][0])}-{pct(s['new_wilson95'][1])}%), "
            f"ref only / new only {s['ref_only']} / {s['new_only']}, new - ref {diff}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="results file of the reference model")
    ap.add_argument("--new", required=True, help="results file of the new model")
    ap.add_argument("--decoder", default="plain")
    ap.add_argument("--json", default="", help="also write the comparison here")
    args = ap.parse_args()
    ref_rows, new_rows = load_results(args.ref), load_results(args.new)
    try:
        pairs = pairs_of(ref_rows, new_rows, args.decoder)
    except PairingError as exc:
        sys.exit(f"compare_models.py: {exc}")
    if not pairs:
        sys.exit(f"compare_models.py: no {args.decoder} episode is in both {args.ref} and {args.new}")
    models = {"ref": sorted({str(r.get("server", {}).get("model")) for _, r, _ in pairs}),
              "new": sorted({str(n.get("server", {}).get("model")) for _, _, n in pairs})}
    out = {"ref": args.ref, "new": args.new, "decoder": args.decoder, "models": models,
           "all": summary(pairs), "per_task": {}}
    print(f"{args.decoder}, {len(pairs)} paired episodes: {fmt(out['all'])}")
    for suite, task in sorted({(k[0], k[1]) for k, _, _ in pairs}):
        s = summary([p for p in pairs if (p[0][0], p[0][1]) == (suite, task)])
        out["per_task"][f"{suite}/{task}"] = s
        print(f"  {suite} task {task}: {fmt(s)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
