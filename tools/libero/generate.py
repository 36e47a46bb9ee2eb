"""Generate LIBERO demonstration episodes with the scripted expert (see README.md for the output contract).

Typical run (resumable; re-running skips episodes already in manifest.jsonl):
  MUJOCO_GL=egl nohup nice -n 19 tools/.venv-libero/bin/python tools/libero/generate.py \
      >> tools/libero/out/generate.log 2>&1 &

Per episode: env.reset(), set_init_state(init), 10 no-op steps [0,0,0,0,0,0,-1] (not recorded), then the expert
until the env reports success or the suite's max steps. The physics rollout runs without rendering (the
camera observable is disabled); for successful episodes every recorded step's simulator state is restored and
the agentview camera is rendered at 224x224, then rotated 180 degrees (img[::-1, ::-1]) like OpenVLA's LIBERO
pipeline. Frame t is the observation the action t was chosen from. No-op actions are dropped as in OpenVLA's
*_no_noops data.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)

SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
NUM_WAIT = 10
IMG = 224
NOOP = [0, 0, 0, 0, 0, 0, -1]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def init_order(n_train, n_heldout, n_states):
    """Per-task init ids in the order they are run: train ids 0..n_train-1 interleaved with heldout ids taken
    from the end of the init-state list (49, 48, ...), so both splits fill early and never overlap."""
    train = list(range(n_train))
    held = [n_states - 1 - i for i in range(n_heldout)]
    order, h = [], 0
    for i, t in enumerate(train):
        order.append((t, "train"))
        if h < len(held) and (i == 0 or i % 3 == 2):  # heldout right after train init 0, then every third
            order.append((held[h], "heldout"))
            h += 1
    order += [(x, "heldout") for x in held[h:]]
    return order


def is_noop(a, prev_a, thresh=1e-4):
    import numpy as np
    return float(np.linalg.norm(a[:6])) < thresh and a[6] == prev_a[6]


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

    def rollout(self, init_id, max_steps):
        from expert import Expert
        np = self.np
        env = self.env
        env.reset()
        self._camera_obs(False)
        obs = env.set_init_state(self.init_states[init_id])
        for _ in range(NUM_WAIT):
            obs, _, _, _ = env.step(NOOP)
        ex = Expert()
        ex.reset(env)
        states, actions = [], []
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
            obs, _, done, _ = env.step(a)
            if done:
                success = True
                break
        return success, states, actions, ex.supported

    def render(self, states):
        np = self.np
        e = self.env.env
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
    done = {}
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
                done[(r["suite"], r["task_id"], r["init_id"])] = r
    return done


def append_manifest(path, rec):
    line = json.dumps(rec) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    ap.add_argument("--train-inits", type=int, default=4, help="init ids 0..N-1 per task are 'train'")
    ap.add_argument("--heldout-inits", type=int, default=1, help="last M init ids per task (49, 48, ..) are 'heldout'")
    ap.add_argument("--per-visit", type=int, default=2, help="episodes run per task each time its scene is built")
    ap.add_argument("--give-up-after", type=int, default=2,
                    help="stop running a task after this many attempts with zero successes (0 = never)")
    ap.add_argument("--shard", default="0/1", help="i/n: this worker runs every n-th task visit")
    args = ap.parse_args()

    problems = check_env.check(args.out)
    if problems:
        sys.exit(check_env.report(problems))
    import numpy as np

    suites = [s for s in args.suites.split(",") if s]
    shard_i, shard_n = (int(x) for x in args.shard.split("/"))
    manifest = os.path.join(args.out, "manifest.jsonl")
    done = load_manifest(manifest)
    log(f"resume: {len(done)} episodes already in {manifest}")

    order = init_order(args.train_inits, args.heldout_inits, 50)
    chunks = [order[i:i + args.per_visit] for i in range(0, len(order), args.per_visit)]
    n_tasks = 10
    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else list(range(n_tasks))
    visits = [(r, t, s) for r in range(len(chunks)) for t in tasks for s in suites]
    visits = [v for k, v in enumerate(visits) if k % shard_n == shard_i]

    stats = {}
    for (s, t, i), r in done.items():
        st = stats.setdefault(s, [0, 0])
        st[0] += 1
        st[1] += int(r["success"])
    t_start = time.time()
    n_frames_total, render_s_total, sim_steps_total, sim_s_total = 0, 0.0, 0, 0.0

    for rnd, task_id, suite in visits:
        todo = [(i, split) for i, split in chunks[rnd] if (suite, task_id, i) not in done]
        if not todo:
            continue
        prev = [r for (s, t, _), r in done.items() if s == suite and t == task_id]
        if args.give_up_after and len(prev) >= args.give_up_after and not any(r["success"] for r in prev):
            log(f"skip {suite} task{task_id:02d}: {len(prev)} attempts, 0 successes")
            continue
        t0 = time.time()
        try:
            runner = Runner(suite, task_id)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR building {suite} task{task_id}: {type(exc).__name__}: {exc}")
            continue
        t_build = time.time() - t0
        for init_id, split in todo:
            t1 = time.time()
            try:
                success, states, actions, supported = runner.rollout(init_id, MAX_STEPS[suite])
            except Exception as exc:  # noqa: BLE001
                log(f"ERROR rollout {suite} task{task_id} init{init_id}: {type(exc).__name__}: {exc}")
                continue
            t_sim = time.time() - t1
            sim_steps_total += len(actions)
            sim_s_total += t_sim
            rel, kept, t_render = None, 0, 0.0
            if success:
                prev_a = np.array(NOOP, dtype=np.float32)
                keep = []
                for k, a in enumerate(actions):
                    if not is_noop(a, prev_a):
                        keep.append(k)
                    prev_a = a
                t2 = time.time()
                frames = runner.render([states[k] for k in keep])
                t_render = time.time() - t2
                acts = np.stack([actions[k] for k in keep]).astype(np.float32)
                rel = f"episodes/{suite}/task{task_id:02d}_init{init_id:02d}.npz"
                save_episode(os.path.join(args.out, rel), frames, acts, runner.instruction, suite, task_id,
                             init_id, True)
                kept = len(keep)
                n_frames_total += kept
                render_s_total += t_render
            rec = {"suite": suite, "task_id": task_id, "init_id": init_id, "instruction": runner.instruction,
                   "steps": len(actions), "frames": kept, "success": bool(success), "file": rel, "split": split,
                   "expert_supported": bool(supported), "sim_s": round(t_sim, 1), "render_s": round(t_render, 1)}
            append_manifest(manifest, rec)
            done[(suite, task_id, init_id)] = rec
            st = stats.setdefault(suite, [0, 0])
            st[0] += 1
            st[1] += int(success)
            el = time.time() - t_start
            rates = " ".join(f"{k.replace('libero_', '')}={v[1]}/{v[0]}" for k, v in sorted(stats.items()))
            log(f"{suite} task{task_id:02d} init{init_id:02d} [{split}] success={success} steps={len(actions)} "
                f"kept={kept} build={t_build:.0f}s sim={t_sim:.0f}s render={t_render:.0f}s | {rates} | "
                f"sim {sim_steps_total / max(sim_s_total, 1e-9):.1f} steps/s, render "
                f"{n_frames_total / max(render_s_total, 1e-9):.2f} frames/s, elapsed {el / 60:.1f} min")
            t_build = 0.0
        runner.close()
    log("finished")


if __name__ == "__main__":
    main()
