"""Generate LIBERO training episodes with the scripted expert as compact records (see README.md).

Typical run (resumable: re-running the same command skips attempts already in data/libero_train/manifest.jsonl):
  for s in 0/2 1/2; do MUJOCO_GL=egl nohup nice -n 19 tools/.venv-libero/bin/python tools/libero/generate.py \
      --shard $s >> tools/libero/out/train_gen.log 2>&1 & done

Training uses init ids 10-49 only (0-9 are evaluation-only and refused). Per attempt: env.reset(),
set_init_state(init), 10 no-op steps [0,0,0,0,0,0,-1] (not recorded), then the expert until the env reports
success or the suite's max steps. The physics runs without rendering (the camera observable is disabled). A
successful episode is saved as a record (records.py: the actions sent, the float64 qpos before each kept step,
the full state before step 0, ...) from which render_records.py re-renders its frames exactly: simulator state
restored, agentview camera at 224x224, rotated 180 degrees (img[::-1, ::-1]) like OpenVLA's LIBERO pipeline.
No-op actions are dropped as in OpenVLA's *_no_noops data. Every attempt (success or failure) is a manifest line.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(HERE))  # tools/ (jsonl_log), after site-packages
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
import records  # noqa: E402
from jsonl_log import append_row, read_keyed  # noqa: E402

SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
NUM_WAIT = 10
IMG = 224
NOOP = [0, 0, 0, 0, 0, 0, -1]
TRAIN_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "data", "libero_train"))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def is_noop(a, prev_a, thresh=1e-4):
    import numpy as np
    return float(np.linalg.norm(a[:6])) < thresh and a[6] == prev_a[6]


def kept_steps(actions):
    """Indices of the steps OpenVLA's *_no_noops data keeps (is_noop against the previous action, the warm-up's
    no-op before the first)."""
    import numpy as np
    prev_a = np.array(NOOP, dtype=np.float32)
    keep = []
    for k, a in enumerate(actions):
        if not is_noop(a, prev_a):
            keep.append(k)
        prev_a = a
    return keep


class Runner:
    def __init__(self, suite_name, task_id):
        import numpy as np
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        self.np = np
        self.suite_name, self.task_id = suite_name, task_id
        self.bench = benchmark.get_benchmark_dict()[suite_name]()
        self.task = self.bench.get_task(task_id)
        self.instruction = self.task.language
        self.init_states = self.bench.get_task_init_states(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), self.task.problem_folder, self.task.bddl_file)
        self.env = OffScreenRenderEnv(bddl_file_name=bddl, camera_names=["agentview"],
                                      camera_heights=IMG, camera_widths=IMG, hard_reset=False)
        self.env.seed(0)
        self.env.reset()
        self._camera_obs(False)

    def _camera_obs(self, on):
        e = self.env.env
        for attr in ("enabled", "active"):
            e.modify_observable("agentview_image", attr, on)

    def rollout(self, init_id, max_steps, perturb=None):
        """Run the expert from an init state. Returns (success, states, actions, supported): the state before
        each control step and the expert's action at it. perturb(step, action) -> executed action, when given,
        drives the env with a perturbed action instead (the expert re-plans from wherever that leaves the arm);
        the actions returned stay the expert's clean ones and the executed ones are left in self.executed."""
        from expert import Expert
        np = self.np
        env = self.env
        env.reset()
        self._camera_obs(False)
        obs = env.set_init_state(self.init_states[init_id])
        # reset() placed the fixtures by moving bodies in the model (not part of the state): keep that placement
        m = self.env.env.sim.model._model
        self.body_pos, self.body_quat = m.body_pos.copy(), m.body_quat.copy()
        for _ in range(NUM_WAIT):
            obs, _, _, _ = env.step(NOOP)
        ex = Expert()
        ex.reset(env)
        states, actions = [], []
        self.executed = []
        success = False
        idle = 0
        for _ in range(max_steps):
            if ex.done_all():  # the expert has nothing left to try; stop a failed episode early
                idle += 1
                if idle > 30:
                    break
            a = np.asarray(ex.act(obs), dtype=np.float64)
            a = np.clip(a, -1.0, 1.0)
            states.append(env.get_sim_state().copy())
            actions.append(a.astype(np.float32))
            if perturb is not None:
                a = np.clip(np.asarray(perturb(len(actions) - 1, a), dtype=np.float64), -1.0, 1.0)
            self.executed.append(a.astype(np.float32))
            obs, _, done, _ = env.step(a)
            if done:
                success = True
                break
        return success, states, actions, ex.supported

    def render(self, states, body_pos=None, body_quat=None):
        """Frames of the given flattened states; body_pos/body_quat: the episode's fixture placement (model
        body poses), set first when given (a record's; generate.py renders right after the rollout, with the
        placement still in the model)."""
        np = self.np
        e = self.env.env
        if body_pos is not None:
            m = e.sim.model._model
            m.body_pos[:] = body_pos
            m.body_quat[:] = body_quat
        frames = np.empty((len(states), IMG, IMG, 3), dtype=np.uint8)
        for i, s in enumerate(states):
            e.sim.set_state_from_flattened(s)
            e.sim.forward()
            img = e.sim.render(camera_name="agentview", width=IMG, height=IMG)
            frames[i] = img[::-1, ::-1]
        return frames

    def close(self):
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass


def load_manifest(path):
    """The manifest's rows keyed by (suite, task_id, init_id), the last row of a key winning (jsonl_log)."""
    return read_keyed(path, ("suite", "task_id", "init_id"))


def append_manifest(path, rec):
    append_row(path, rec)


def save_episode(path, frames, actions, instruction, suite, task_id, init_id, success):
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(
            f, frames=frames, actions=actions.astype(np.float32), instruction=np.array(instruction),
            suite=np.array(suite), task_id=np.array(task_id, dtype=np.int64),
            init_id=np.array(init_id, dtype=np.int64), success=np.array(bool(success)))
    os.replace(tmp, path)


def train_visits(suites, tasks, per_visit, shard_i, shard_n):
    """Round-robin work order over training inits 10-49: round r runs inits 10+r*K .. 10+r*K+K-1 of every task
    (task 0 of every suite, then task 1, ...). Visit (r, task) goes to shard (r + task index) % n, so a task
    alternates between workers from round to round and long suites do not all land on one worker."""
    inits = list(records.TRAIN_INITS)
    chunks = [inits[i:i + per_visit] for i in range(0, len(inits), per_visit)]
    pairs = [(t, s) for t in tasks for s in suites]
    visits = []
    for r, chunk in enumerate(chunks):
        for j, (t, s) in enumerate(pairs):
            if (r + j) % shard_n == shard_i:
                visits.append((r, t, s, chunk))
    return visits


def read_attempts(manifest, version):
    """Attempts that count for this expert version: every success (any version) whose record file is there
    (verify_successes moves unusable ones away) and the failures of this version. Failures of older expert
    versions and successes without a record are retried."""
    rows = load_manifest(manifest)
    out = os.path.dirname(manifest)
    return {k: r for k, r in rows.items()
            if (r["success"] and os.path.exists(os.path.join(out, r["file"])))
            or (not r["success"] and r.get("expert_version") == version)}


def verify_successes(out, done, bad_dir):
    """Resume check: every success in the manifest must have a loadable record that matches its row; a bad one
    is moved to bad_dir (nothing deleted) and its attempt is redone."""
    n_bad = 0
    for key, r in list(done.items()):
        if not r["success"]:
            continue
        path = os.path.join(out, r["file"])
        try:
            records.load_record(path, r)
        except records.RecordError as exc:
            log(f"ERROR {exc} -- attempt will be redone")
            os.makedirs(bad_dir, exist_ok=True)
            try:  # the other worker may have moved it already
                os.replace(path, os.path.join(bad_dir, r["file"].replace("/", "_") + f".{int(time.time())}"))
            except FileNotFoundError:
                pass
            del done[key]
            n_bad += 1
    return n_bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=TRAIN_DIR, help="records + manifest.jsonl (committed to git)")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    ap.add_argument("--inits", default="", help="comma-separated training init ids to run (default: 10-49 in "
                    "round-robin chunks); 0-9 are refused")
    ap.add_argument("--target", type=int, default=15, help="stop a task once it has this many successful records")
    ap.add_argument("--per-visit", type=int, default=5, help="attempts per task each time its scene is built")
    ap.add_argument("--give-up-after", type=int, default=3,
                    help="stop a task after this many attempts (this expert version) with zero successes "
                         "(0 = never)")
    ap.add_argument("--shard", default="0/1", help="i/n: this worker runs its share of the task visits")
    ap.add_argument("--frames-dir", default="", help="also render every successful episode's frames at "
                    "generation time (from the float64 simulator states) into this folder, as the old episode "
                    "files (for checking render_records.py; ~4x slower)")
    args = ap.parse_args()

    if args.inits:
        for i in args.inits.split(","):
            try:
                records.check_train_init(int(i))
            except records.RecordError as exc:
                sys.exit(f"generate.py: --inits: {exc}")
    problems = check_env.check(args.out)
    if problems:
        sys.exit(check_env.report(problems))
    import numpy as np
    from expert import EXPERT_VERSION, Expert

    suites = [s for s in args.suites.split(",") if s]
    shard_i, shard_n = (int(x) for x in args.shard.split("/"))
    manifest = os.path.join(args.out, "manifest.jsonl")
    done = read_attempts(manifest, EXPERT_VERSION)
    n_bad = verify_successes(args.out, done, os.path.join(HERE, "out", "bad_records"))
    n_ok = sum(r["success"] for r in done.values())
    log(f"resume: {len(done)} attempts count ({n_ok} successes, {n_bad} bad records set aside) in {manifest}; "
        f"expert version {EXPERT_VERSION}")

    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else list(range(10))
    if args.inits:
        visits = [(0, t, s, [int(i) for i in args.inits.split(",")]) for t in tasks for s in suites]
        visits = [v for k, v in enumerate(visits) if k % shard_n == shard_i]
    else:
        visits = train_visits(suites, tasks, args.per_visit, shard_i, shard_n)

    t_start = time.time()
    n_frames_total, render_s_total, sim_steps_total, sim_s_total, n_new = 0, 0.0, 0, 0.0, 0
    for rnd, task_id, suite, chunk in visits:
        done = read_attempts(manifest, EXPERT_VERSION)  # the other worker's attempts too
        prev = [r for (s, t, _), r in done.items() if s == suite and t == task_id]
        n_succ = sum(r["success"] for r in prev)
        cur = [r for r in prev if r.get("expert_version") == EXPERT_VERSION]
        if any(not r.get("expert_supported", True) for r in cur):
            continue  # goal not supported by this expert version
        if n_succ >= args.target:
            continue
        if args.give_up_after and n_succ == 0 and len(cur) >= args.give_up_after:
            continue
        todo = [i for i in chunk if (suite, task_id, i) not in done]
        if not todo:
            continue
        t0 = time.time()
        try:
            runner = Runner(suite, task_id)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR building {suite} task{task_id}: {type(exc).__name__}: {exc}")
            continue
        t_build = time.time() - t0
        nq = runner.env.env.sim.model.nq
        probe = Expert()
        probe.reset(runner.env)
        if not probe.supported:
            rec = {"suite": suite, "task_id": task_id, "init_id": todo[0], "instruction": runner.instruction,
                   "steps": 0, "frames": 0, "success": False, "file": None, "split": "train",
                   "expert_supported": False, "expert_version": EXPERT_VERSION, "sim_s": 0.0}
            append_manifest(manifest, rec)
            log(f"{suite} task{task_id:02d}: goal not supported by expert version {EXPERT_VERSION} "
                f"({[st[3] for st in probe.subtasks if st[0] == 'unsupported']}) -- skipped")
            runner.close()
            continue
        for init_id in todo:
            if n_succ >= args.target:
                break
            if args.give_up_after and n_succ == 0 and len(cur) >= args.give_up_after:
                log(f"{suite} task{task_id:02d}: {len(cur)} attempts, 0 successes -- given up")
                break
            t1 = time.time()
            try:
                success, states, actions, supported = runner.rollout(init_id, MAX_STEPS[suite])
            except Exception as exc:  # noqa: BLE001
                log(f"ERROR rollout {suite} task{task_id} init{init_id}: {type(exc).__name__}: {exc}")
                break
            t_sim = time.time() - t1
            sim_steps_total += len(actions)
            sim_s_total += t_sim
            rel, kept, t_render, size = None, 0, 0.0, 0
            if success:
                keep = kept_steps(actions)
                S = np.stack([states[k] for k in keep])
                rel = records.rel_path(suite, task_id, init_id)
                path = os.path.join(args.out, rel)
                records.save_record(
                    path, suite=suite, task_id=task_id, init_id=init_id, instruction=runner.instruction,
                    actions=np.stack([actions[k] for k in keep]), step=np.array(keep), qpos=S[:, 1:1 + nq],
                    state0=states[0], all_actions=np.stack(actions), expert_version=EXPERT_VERSION,
                    body_pos=runner.body_pos, body_quat=runner.body_quat)
                size = os.path.getsize(path)
                kept = len(keep)
                if args.frames_dir:
                    t2 = time.time()
                    frames = runner.render(list(S))
                    t_render = time.time() - t2
                    n_frames_total += kept
                    render_s_total += t_render
                    save_episode(os.path.join(args.frames_dir, rel), frames, np.stack([actions[k] for k in keep]),
                                 runner.instruction, suite, task_id, init_id, True)
                n_succ += 1
                n_new += 1
            rec = {"suite": suite, "task_id": task_id, "init_id": init_id, "instruction": runner.instruction,
                   "steps": len(actions), "frames": kept, "success": bool(success), "file": rel, "split": "train",
                   "expert_supported": bool(supported), "expert_version": EXPERT_VERSION,
                   "sim_s": round(t_sim, 2), "bytes": size}
            append_manifest(manifest, rec)
            done[(suite, task_id, init_id)] = rec
            cur.append(rec)
            el = time.time() - t_start
            log(f"{suite} task{task_id:02d} init{init_id:02d} success={success} steps={len(actions)} kept={kept} "
                f"{size / 1e3:.0f}KB build={t_build:.0f}s sim={t_sim:.0f}s | task {n_succ} ok | new records "
                f"{n_new} | sim {sim_steps_total / max(sim_s_total, 1e-9):.1f} steps/s"
                + (f", render {n_frames_total / max(render_s_total, 1e-9):.2f} frames/s" if args.frames_dir else "")
                + f", elapsed {el / 60:.1f} min")
            t_build = 0.0
        runner.close()
    log("finished")


if __name__ == "__main__":
    main()
