"""Re-render training records (data/libero_train, see records.py) into frame episodes, with generate.py's camera.

  MUJOCO_GL=egl nohup nice -n 19 tools/.venv-libero/bin/python tools/libero/render_records.py \
      --out tools/libero/out/episodes >> tools/libero/out/render.log 2>&1 &

For every record (validated against its path and its manifest row; a bad record is reported with the reason,
skipped, left untouched, and makes the exit status 1): build the task's env once (generate.Runner), restore the
record's fixture placement (model body poses) and its qpos before each kept step into the simulator
(set_state_from_flattened + forward), render the
agentview camera at 224x224 and rotate it 180 degrees -- exactly generate.Runner.render, the function the
held-out frames were rendered with. Writes <out>/<suite>/taskTT_initII.npz in the episode format of
tools/libero/README.md (frames uint8 [T,224,224,3], actions float32 [T,7], instruction, suite, task_id, init_id,
success) and a line per episode in <out>/manifest.jsonl (split "train"), the layout tools/microvla/data.py
reads. Resumable: episodes already in --out are skipped (unless --force).

--compare DIR: instead of (or besides) writing, compare the re-rendered frames with DIR/<suite>/taskTT_initII.npz
(e.g. frames generate.py --frames-dir rendered from the float64 states during generation) and print the max
abs pixel difference per episode.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
import records  # noqa: E402
from generate import TRAIN_DIR, Runner, append_manifest, log, save_episode  # noqa: E402
from jsonl_log import read_keyed  # noqa: E402


def find_records(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                out += [os.path.join(root, f) for f in files if f.endswith(".npz")]
        else:
            out.append(p)
    return sorted(out)


def render_record(runner, rec, every=1):
    import numpy as np
    nq = runner.env.env.sim.model.nq
    if rec["qpos"].shape[1] != nq or len(rec["state0"]) != len(runner.env.get_sim_state()):
        raise records.RecordError(f"record has nq={rec['qpos'].shape[1]} / state size {len(rec['state0'])}, the "
                                  f"env of {rec['suite']} task {rec['task_id']} has nq={nq} / state size "
                                  f"{len(runner.env.get_sim_state())}")
    nbody = runner.env.env.sim.model._model.nbody
    if len(rec["body_pos"]) != nbody:
        raise records.RecordError(f"record has {len(rec['body_pos'])} bodies, the env of {rec['suite']} task "
                                  f"{rec['task_id']} has {nbody}")
    states = []
    for q in rec["qpos"][::every]:
        s = rec["state0"].copy()
        s[1:1 + nq] = q
        states.append(s)
    return runner.render(states, rec["body_pos"], rec["body_quat"]).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", default=[TRAIN_DIR], help="record files or folders (default: "
                    "data/libero_train)")
    ap.add_argument("--manifest", default="", help="manifest.jsonl to check the records against (default: "
                    "manifest.jsonl of the folder given / of data/libero_train when it exists)")
    ap.add_argument("--out", default="", help="write frame episodes here")
    ap.add_argument("--compare", default="", help="compare with frame episodes in this folder")
    ap.add_argument("--limit", type=int, default=0, help="at most this many records")
    ap.add_argument("--force", action="store_true", help="re-render episodes already in --out")
    ap.add_argument("--noisy", action="store_true", help="the paths hold noise-injected records (format version 3, "
                    "generate_noisy.py); clean ones are then refused, and vice versa without this flag")
    ap.add_argument("--every", type=int, default=1, help="render every N-th kept step only (its action with it): "
                    "consecutive frames are near-duplicates, so N=2 halves the rendering for little lost data")
    args = ap.parse_args()
    if not args.out and not args.compare:
        sys.exit("render_records.py: give --out DIR and/or --compare DIR")
    if args.every < 1:
        sys.exit("render_records.py: --every must be at least 1")
    manifest = args.manifest
    if not manifest:
        for p in args.paths + [TRAIN_DIR]:
            cand = os.path.join(p if os.path.isdir(p) else os.path.dirname(os.path.dirname(p)), "manifest.jsonl")
            if os.path.exists(cand):
                manifest = cand
                break
    key_fields = ("suite", "task_id", "init_id") + (("noise_seed",) if args.noisy else ())
    rows = read_keyed(manifest, key_fields) if manifest else {}
    files = find_records(args.paths)
    if args.limit:
        files = files[:args.limit]
    problems = check_env.check(args.out or os.path.join(HERE, "out"))
    if problems:
        sys.exit(check_env.report(problems))
    import numpy as np

    bad, todo = [], []
    for f in files:
        try:
            ident = records.parse_path(f, args.noisy)
            suite, task_id, init_id = ident[:3]
            row = rows.get(ident)
            if manifest and (row is None or not row["success"]):
                raise records.RecordError(f"{f}: no successful attempt for it in {manifest}")
            rec = records.load_record(f, row, noisy=args.noisy)
        except records.RecordError as exc:
            bad.append(str(exc))
            log(f"BAD {exc}")
            continue
        rel = records.noisy_rel_path(*ident) if args.noisy else records.rel_path(suite, task_id, init_id)
        if args.out and not args.compare and not args.force and os.path.exists(os.path.join(args.out, rel)):
            continue
        todo.append((suite, task_id, rel, rec))
    log(f"{len(files)} records, {len(bad)} bad, {len(todo)} to render (manifest: {manifest or 'none'})")
    todo.sort(key=lambda x: (x[0], x[1], x[2]))
    out_rows = {}
    if args.out:  # clean and noisy episodes may share one output folder: key them by file
        out_rows = read_keyed(os.path.join(args.out, "manifest.jsonl"), ("file",))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    runner, key, n_frames, t_render, worst = None, None, 0, 0.0, 0
    for suite, task_id, rel, rec in todo:
        if key != (suite, task_id):
            if runner:
                runner.close()
            runner, key = Runner(suite, task_id), (suite, task_id)
        t0 = time.time()
        try:
            frames = render_record(runner, rec, args.every)
        except records.RecordError as exc:
            bad.append(f"{rel}: {exc}")
            log(f"BAD {rel}: {exc}")
            continue
        dt = time.time() - t0
        n_frames += len(frames)
        t_render += dt
        msg = f"{rel}: {len(frames)} frames in {dt:.1f}s"
        if args.compare:
            ref_path = os.path.join(args.compare, rel)
            if os.path.exists(ref_path):
                ref = np.load(ref_path)["frames"]
                if ref.shape != frames.shape:
                    msg += f" | compare: shape {ref.shape} vs {frames.shape}"
                    worst = 255
                else:
                    d = np.abs(ref.astype(np.int16) - frames.astype(np.int16))
                    worst = max(worst, int(d.max()))
                    msg += f" | vs {ref_path}: max abs diff {int(d.max())}, pixels differing {int((d > 0).sum())}"
            else:
                msg += f" | compare: {ref_path} missing"
        if args.out:
            save_episode(os.path.join(args.out, rel), frames, rec["actions"][::args.every], rec["instruction"], suite, task_id,
                         rec["init_id"], True)
            if (rel,) not in out_rows:
                row = {"suite": suite, "task_id": task_id, "init_id": rec["init_id"],
                       "instruction": rec["instruction"], "steps": int(len(rec["all_actions"])),
                       "frames": int(len(frames)), "frame_every": args.every, "success": True, "file": rel, "split": "train",
                       "expert_version": rec["expert_version"]}
                if args.noisy:
                    row.update(noise_seed=rec["noise_seed"], noisy=True)
                append_manifest(os.path.join(args.out, "manifest.jsonl"), row)
                out_rows[(rel,)] = row
        log(msg + f" | {n_frames / max(t_render, 1e-9):.2f} frames/s")
    if runner:
        runner.close()
    if args.compare:
        log(f"compare: max abs pixel difference over all compared episodes: {worst}")
    if bad:
        log(f"{len(bad)} bad records (left untouched):\n  " + "\n  ".join(bad))
        sys.exit(1)
    log("finished")


if __name__ == "__main__":
    main()
