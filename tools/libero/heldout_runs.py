"""Held-out evaluation runs: the scripted expert on the evaluation-only init states 0..9 (see README.md).

Two phases, both resumable:

  # 1. roll out (LIBERO venv; background, resumable: finished episodes in episodes.jsonl are skipped)
  MUJOCO_GL=egl nohup nice -n 19 tools/.venv-libero/bin/python tools/libero/heldout_runs.py \
      >> tools/libero/out/heldout_runs/run.log 2>&1 &
  # 2. pick the runs and write the PNGs + manifest.json (no model fields yet)
  tools/.venv-libero/bin/python tools/libero/heldout_runs.py --assemble --out data/libero_heldout
  # 3. expert tokens, previous-action tokens and the PyTorch model's greedy tokens/margins/actions
  tools/.venv/bin/python tools/microvla/heldout.py --rescore --model models/microvla-libero --out data/libero_heldout

Phase 1, per task of the four suites that the expert supports (no Open/Close goal): the episode protocol of
generate.py (reset, set_init_state, 10 no-op warm-up steps, the suite's step limit, stop when the env reports
`done`), init ids 0, 1, 2, ... 9 in order until `--per-task` (3) episodes succeeded; a task is given up after
`--give-up-after` attempts without a success. Every attempt is a line of `<work>/episodes.jsonl`. For a successful
episode, the k-th of its task, one candidate run of `--render-len` consecutive control steps is rendered (the
generate.py simulator-state restore: same camera, 224x224, rotated 180 degrees): its start is drawn with a
generator seeded by the episode id, inside the k-th third of the episode, so the three episodes of a task cover
its beginning, middle and end. No step is dropped inside a run (no-ops included). The episode's every action
(after the warm-up) and the candidate frames go to `<work>/episodes/<suite>/taskTT_initII.npz`.

Phase 2: the first `--per-task` successful episodes of every task, each contributing the first L steps of its
candidate run, L chosen so the set has `--frames` frames (runs differ by at most one step in length; the longer
ones spread evenly over the episode order). Entries are ordered by episode, then step. Also writes
`expert_success.json` (per task: attempts, successes, which init ids succeeded).
"""
import argparse
import json
import os
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
from generate import MAX_STEPS, SUITES, Runner, append_manifest, load_manifest, log  # noqa: E402

HELDOUT_INITS = list(range(10))


def episode_id(suite, task_id, init_id):
    return f"{suite}/task{task_id:02d}_init{init_id:02d}"


def run_start(eid, k, n_per_task, T, length):
    """Start of the candidate run of the k-th successful episode of its task (T recorded steps)."""
    import numpy as np
    rng = np.random.default_rng(zlib.crc32(eid.encode()))
    hi_all = max(T - length, 0)
    lo = min(k * T // n_per_task, hi_all)
    hi = min((k + 1) * T // n_per_task - 1, hi_all)
    return int(rng.integers(lo, max(hi, lo) + 1))


def save_npz(path, **arrays):
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def rollouts(args):
    import numpy as np
    from expert import Expert
    os.makedirs(args.work, exist_ok=True)
    progress = os.path.join(args.work, "episodes.jsonl")
    done = load_manifest(progress)
    log(f"resume: {len(done)} episodes already in {progress}")
    suites = [s for s in args.suites.split(",") if s]
    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else list(range(10))
    shard_i, shard_n = (int(x) for x in args.shard.split("/"))
    jobs = [(s, t) for s in suites for t in tasks]
    jobs = [j for k, j in enumerate(jobs) if k % shard_n == shard_i]
    sim_steps, sim_s, renders, render_s, t_start = 0, 0.0, 0, 0.0, time.time()
    for suite, task_id in jobs:
        prev = [r for (s, t, _), r in done.items() if s == suite and t == task_id]
        n_ok = sum(r["success"] for r in prev)
        if any(not r.get("expert_supported", True) for r in prev):
            continue
        todo = [i for i in HELDOUT_INITS if (suite, task_id, i) not in done]
        if n_ok >= args.per_task or not todo:
            continue
        if args.give_up_after and n_ok == 0 and len(prev) >= args.give_up_after:
            continue
        t0 = time.time()
        try:
            runner = Runner(suite, task_id)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR building {suite} task{task_id}: {type(exc).__name__}: {exc}")
            continue
        t_build = time.time() - t0
        probe = Expert()
        probe.reset(runner.env)
        if not probe.supported:
            rec = {"suite": suite, "task_id": task_id, "init_id": todo[0], "instruction": runner.instruction,
                   "steps": 0, "success": False, "expert_supported": False, "file": None}
            append_manifest(progress, rec)
            done[(suite, task_id, todo[0])] = rec
            log(f"{suite} task{task_id:02d}: goal not supported by the expert "
                f"({[s[3] for s in probe.subtasks if s[0] == 'unsupported']}) -- skipped")
            runner.close()
            continue
        for init_id in todo:
            if n_ok >= args.per_task:
                break
            if args.give_up_after and n_ok == 0 and len(prev) >= args.give_up_after:
                log(f"{suite} task{task_id:02d}: {len(prev)} attempts, 0 successes -- given up")
                break
            t1 = time.time()
            try:
                success, states, actions, supported = runner.rollout(init_id, MAX_STEPS[suite])
            except Exception as exc:  # noqa: BLE001
                log(f"ERROR rollout {suite} task{task_id} init{init_id}: {type(exc).__name__}: {exc}")
                break
            t_sim = time.time() - t1
            sim_steps += len(actions)
            sim_s += t_sim
            eid = episode_id(suite, task_id, init_id)
            rec = {"suite": suite, "task_id": task_id, "init_id": init_id, "episode": eid,
                   "instruction": runner.instruction, "steps": len(actions), "success": bool(success),
                   "expert_supported": bool(supported), "file": None, "sim_s": round(t_sim, 2)}
            if success:
                T = len(actions)
                length = min(args.render_len, T)
                start = run_start(eid, n_ok, args.per_task, T, length)
                t2 = time.time()
                frames = runner.render(states[start:start + length])
                t_render = time.time() - t2
                renders += length
                render_s += t_render
                rel = f"episodes/{suite}/task{task_id:02d}_init{init_id:02d}.npz"
                save_npz(os.path.join(args.work, rel), frames=frames,
                         actions=np.stack(actions).astype(np.float32), run_start=np.array(start, dtype=np.int64),
                         instruction=np.array(runner.instruction))
                rec.update(file=rel, k=n_ok, run_start=start, run_len=length, render_s=round(t_render, 2))
                n_ok += 1
            append_manifest(progress, rec)
            done[(suite, task_id, init_id)] = rec
            prev.append(rec)
            el = time.time() - t_start
            log(f"{eid} success={success} steps={len(actions)} build={t_build:.0f}s sim={t_sim:.0f}s "
                f"render={rec.get('render_s', 0):.0f}s | task {n_ok}/{len(prev)} | "
                f"sim {sim_steps / max(sim_s, 1e-9):.1f} steps/s, render {renders / max(render_s, 1e-9):.2f} "
                f"frames/s, elapsed {el / 60:.1f} min")
            t_build = 0.0
        runner.close()
    log("finished")


def assemble(args):
    import numpy as np
    from PIL import Image
    progress = os.path.join(args.work, "episodes.jsonl")
    done = load_manifest(progress)
    eps, table = [], {}
    want_tasks = {int(t) for t in args.tasks.split(",")} if args.tasks else set(range(10))
    want_suites = [s for s in args.suites.split(",") if s]
    for suite in want_suites:
        for task_id in sorted(want_tasks):
            rows = sorted([r for (s, t, _), r in done.items() if s == suite and t == task_id],
                          key=lambda r: r["init_id"])
            if not rows:
                continue
            ok = [r for r in rows if r["success"]][:args.per_task]
            supported = all(r.get("expert_supported", True) for r in rows)
            table[f"{suite}/task{task_id:02d}"] = {
                "instruction": rows[0]["instruction"], "supported": supported,
                "attempts": len(rows) if supported else 0, "successes": sum(r["success"] for r in rows),
                "inits": {str(r["init_id"]): bool(r["success"]) for r in rows} if supported else {}}
            if len(ok) >= args.per_task:
                eps += ok
    if not eps:
        sys.exit("no finished task with enough successful episodes")
    cap = min(r["run_len"] for r in eps)
    base, extra = divmod(args.frames, len(eps))
    if base + (extra > 0) > cap:
        sys.exit(f"{args.frames} frames need runs of {base + 1} steps; only {cap} rendered per episode")
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(".png"):
            os.remove(os.path.join(args.out, f))
    entries, n = [], 0
    for j, r in enumerate(eps):
        z = np.load(os.path.join(args.work, r["file"]))
        acts, frames, start = z["actions"], z["frames"], int(z["run_start"])
        L = (j + 1) * args.frames // len(eps) - j * args.frames // len(eps)
        for i in range(L):
            step = start + i
            name = f"{n:04d}.png"
            img = Image.fromarray(frames[i])
            if args.size and args.size != img.width:  # the model's input size: neither PyTorch nor Rust resamples
                img = img.resize((args.size, args.size), Image.BICUBIC)
            img.save(os.path.join(args.out, name), optimize=True)
            prev = [float(x) for x in acts[step - 1]] if step > 0 else None
            entries.append({
                "file": name, "suite": r["suite"], "unnorm_key": f"{r['suite']}_no_noops",
                "task_id": int(r["task_id"]), "init_id": int(r["init_id"]), "step": int(step),
                "instruction": r["instruction"], "expert_action": [float(x) for x in acts[step]],
                "expert_tokens": None, "model_greedy_tokens": None, "model_top2_margins": None,
                "model_action": None, "episode": r["episode"], "run": 0, "previous_action": prev,
                "previous_expert_tokens": None, "episode_steps": int(len(acts))})
            n += 1
    json.dump(entries, open(os.path.join(args.out, "manifest.json"), "w"), indent=1)
    json.dump({"per_task": args.per_task, "inits": HELDOUT_INITS, "tasks": table},
              open(os.path.join(args.out, "expert_success.json"), "w"), indent=1)
    size = sum(os.path.getsize(os.path.join(args.out, e["file"])) for e in entries)
    print(f"wrote {len(entries)} frames from {len(eps)} episodes (runs of {base}-{base + (extra > 0)} steps), "
          f"PNGs {size / 1e6:.1f} MB, in {args.out}")
    for k, v in table.items():
        print(f"  {k}: {v['successes']}/{v['attempts']}{'' if v['supported'] else ' (unsupported)'} "
              f"{v['instruction']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(HERE, "out", "heldout_runs"))
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    ap.add_argument("--per-task", type=int, default=3, help="successful episodes wanted per task")
    ap.add_argument("--give-up-after", type=int, default=3,
                    help="stop a task after this many attempts with zero successes (0 = try all 10 inits)")
    ap.add_argument("--render-len", type=int, default=14, help="candidate run length rendered per episode")
    ap.add_argument("--shard", default="0/1", help="i/n: this worker runs every n-th task")
    ap.add_argument("--assemble", action="store_true", help="write --out from the finished episodes")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "data", "libero_heldout"))
    ap.add_argument("--frames", type=int, default=630, help="frames in the assembled set")
    ap.add_argument("--size", type=int, default=0, help="write the PNGs at SIZE x SIZE (PIL bicubic, as the trainer "
                    "resizes): the model's input size, so the Rust and PyTorch models see the same pixels")
    args = ap.parse_args()
    if args.assemble:
        return assemble(args)
    problems = check_env.check(args.work)
    if problems:
        sys.exit(check_env.report(problems))
    rollouts(args)


if __name__ == "__main__":
    main()
