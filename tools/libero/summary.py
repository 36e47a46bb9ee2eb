"""Progress of the training-record generation: per task the expert's successes/attempts on the training inits,
the records, their steps and bytes, from data/libero_train/manifest.jsonl (or --out DIR).

  tools/.venv-libero/bin/python tools/libero/summary.py            # table + totals
  tools/.venv-libero/bin/python tools/libero/summary.py --markdown # the per-task table for README.md

Per task: the usable records (the last attempt of an init succeeded and its record is on disk in the current
format), successes/attempts over every attempt in the manifest (all expert versions; an init retried after an
expert change counts twice; format-1 successes count as successes though their records were redone), and
successes/attempts of the newest expert version alone. Throughput is physics only (sim_s: the rollout without rendering, scene builds excluded).
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
    import numpy as np
    sys.path.insert(0, HERE)
    import records
    sys.path.append(os.path.dirname(HERE))  # tools/ (jsonl_log), after site-packages
    from jsonl_log import read_rows
    path = os.path.join(args.out, "manifest.jsonl")
    if not os.path.exists(path):
        sys.exit(f"summary.py: {path} not found: run generate.py first")
    lines = read_rows(path)
    version = max((r.get("expert_version", 0) for r in lines), default=0)
    usable_cache = {}

    def usable(r):  # a record of the current format on disk
        if r["file"] not in usable_cache:
            try:
                with np.load(os.path.join(args.out, r["file"])) as z:
                    usable_cache[r["file"]] = int(z["format_version"]) == records.RECORD_FORMAT
            except Exception:  # noqa: BLE001
                usable_cache[r["file"]] = False
        return usable_cache[r["file"]]

    per = defaultdict(lambda: {"all_ok": 0, "all_n": 0, "v_ok": 0, "v_n": 0, "rec": set(), "steps": 0, "bytes": 0,
                               "unsupported": False, "instr": ""})
    last = {}
    sim_s = sim_steps = 0.0
    for r in lines:
        p = per[(r["suite"], r["task_id"])]
        p["instr"] = r["instruction"]
        if not r.get("expert_supported", True):
            p["unsupported"] = True
            continue
        p["all_n"] += 1
        p["all_ok"] += int(r["success"])
        if r.get("expert_version") == version:
            p["v_n"] += 1
            p["v_ok"] += int(r["success"])
        sim_s += r.get("sim_s", 0)
        sim_steps += r["steps"]
        last[(r["suite"], r["task_id"], r["init_id"])] = r
    for (s, t, i), r in last.items():
        if r["success"] and usable(r):
            p = per[(s, t)]
            p["rec"].add(i)
            p["steps"] += r["frames"]
            p["bytes"] += r.get("bytes", 0)
    tot = defaultdict(float)
    if args.markdown:
        print(f"| suite | task | instruction | records | successes/attempts, all attempts | "
              f"successes/attempts, expert v{version} |")
        print("|---|---|---|---|---|---|")
    else:
        print(f"{'suite':15s} {'task':>4s} {'records':>7s} {'all':>7s} {'v' + str(version):>7s} {'steps':>6s} "
              f"{'MB':>5s}  instruction")
    for s in SUITES:
        for t in range(10):
            p = per.get((s, t))
            if p is None:
                row = (s, t, "", "-", "not attempted yet", "-", 0, 0.0)
            else:
                allr = f"{p['all_ok']}/{p['all_n']}" if p["all_n"] else "-"
                vr = f"{p['v_ok']}/{p['v_n']}" if p["v_n"] else "-"
                if p["unsupported"] and not p["all_n"]:
                    allr = vr = "unsupported goal"
                row = (s, t, p["instr"], str(len(p["rec"])), allr, vr, p["steps"], p["bytes"] / 1e6)
                tot["ok"] += len(p["rec"])
                tot["n"] += p["all_n"]
                tot["steps"] += p["steps"]
                tot["bytes"] += p["bytes"]
                tot["tasks_ok"] += len(p["rec"]) > 0
                tot["tasks_10"] += len(p["rec"]) >= 10
            if args.markdown:
                print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {row[5]} |")
            else:
                print(f"{row[0]:15s} {row[1]:4d} {row[3]:>7s} {row[4]:>7s} {row[5]:>7s} {row[6]:6d} {row[7]:5.2f}  "
                      f"{row[2]}")
    print(f"\ntotal: {int(tot['ok'])} usable records from {int(tot['n'])} attempts (all expert versions), "
          f"{int(tot['tasks_ok'])} tasks with a record, {int(tot['tasks_10'])} with >= 10; {int(tot['steps'])} "
          f"steps; {tot['bytes'] / 1e6:.1f} MB ({tot['bytes'] / max(tot['ok'], 1) / 1e3:.0f} KB/record); physics "
          f"{sim_steps / max(sim_s, 1e-9):.1f} steps/s per worker (sim_s, all attempts)")


if __name__ == "__main__":
    main()
