"""Progress of the training-record generation: per task the expert's successes/attempts on the training inits,
the records, their steps and bytes, from data/libero_train/manifest.jsonl (or --out DIR).

  tools/.venv-libero/bin/python tools/libero/summary.py            # table + totals
  tools/.venv-libero/bin/python tools/libero/summary.py --markdown # the per-task table for README.md

Successes count every successful attempt whose record is on disk in the current format (whatever expert
version made it); attempts count
those successes plus the failures of the newest expert version in the manifest (older failures are retried by
generate.py). Throughput is physics only (sim_s: the rollout without rendering, scene builds excluded).
"""
import argparse
import json
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..", "..", "data", "libero_train")))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = {}
    path = os.path.join(args.out, "manifest.jsonl")
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[(r["suite"], r["task_id"], r["init_id"])] = r  # the last line of an attempt wins
    version = max((r.get("expert_version", 0) for r in rows.values()), default=0)
    import numpy as np
    sys.path.insert(0, HERE)
    import records

    def usable(r):  # a success counts only with a record of the current format on disk
        try:
            with np.load(os.path.join(args.out, r["file"])) as z:
                return int(z["format_version"]) == records.RECORD_FORMAT
        except Exception:  # noqa: BLE001
            return False

    stale = [k for k, r in rows.items() if r["success"] and not usable(r)]
    for k in stale:
        del rows[k]  # generate.py redoes these attempts
    per = defaultdict(lambda: {"ok": 0, "n": 0, "steps": 0, "bytes": 0, "unsupported": False, "instr": "",
                               "inits": []})
    tot = defaultdict(float)
    for (s, t, i), r in rows.items():
        if not r["success"] and r.get("expert_version", 0) != version:
            continue
        p = per[(s, t)]
        p["instr"] = r["instruction"]
        if not r.get("expert_supported", True):
            p["unsupported"] = True
            continue
        p["n"] += 1
        tot["sim_s"] += r.get("sim_s", 0)
        tot["sim_steps"] += r["steps"]
        if r["success"]:
            p["ok"] += 1
            p["steps"] += r["frames"]
            p["bytes"] += r.get("bytes", 0)
            p["inits"].append(i)
    if args.markdown:
        print("| suite | task | instruction | successes/attempts (inits 10-49) | records | steps |")
        print("|---|---|---|---|---|---|")
    for s in SUITES:
        for t in range(10):
            if (s, t) not in per:
                if not args.markdown:
                    print(f"{s:15s} {t:2d}  (not attempted yet)")
                continue
            p = per[(s, t)]
            res = "unsupported goal" if p["unsupported"] and not p["n"] else f"{p['ok']}/{p['n']}"
            if args.markdown:
                print(f"| {s} | {t} | {p['instr']} | {res} | {p['ok']} | {p['steps']} |")
            else:
                print(f"{s:15s} {t:2d} {res:>8s}  steps {p['steps']:6d}  {p['bytes'] / 1e6:5.2f} MB  {p['instr']}")
            tot["ok"] += p["ok"]
            tot["n"] += p["n"]
            tot["steps"] += p["steps"]
            tot["bytes"] += p["bytes"]
            tot["tasks_ok"] += p["ok"] > 0
            tot["tasks_10"] += p["ok"] >= 10
    print(f"\n{len(stale)} successes in the manifest without a usable record (old format / missing; redone by "
          f"generate.py)")
    print(f"total: {int(tot['ok'])} records / {int(tot['n'])} attempts (expert version {version} failures), "
          f"{int(tot['tasks_ok'])} tasks with a record, {int(tot['tasks_10'])} with >= 10; {int(tot['steps'])} "
          f"steps; {tot['bytes'] / 1e6:.1f} MB ({tot['bytes'] / max(tot['ok'], 1) / 1e3:.0f} KB/record); physics "
          f"{tot['sim_steps'] / max(tot['sim_s'], 1e-9):.1f} steps/s per worker")


if __name__ == "__main__":
    main()
