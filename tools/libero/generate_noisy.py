"""Noise-injected expert rollouts (DART-style recoveries) as version-3 records in data/libero_noisy/.

  for s in 0/2 1/2; do MUJOCO_GL=egl nohup nice -n 19 tools/.venv-libero/bin/python tools/libero/generate_noisy.py \
      --suites libero_goal --tasks 1,2,4,9 --seeds 0-2 --shard $s >> tools/libero/out/noisy_gen.log 2>&1 & done

Each attempt is generate.py's episode protocol (reset, set_init_state, 10 no-op steps, the expert until the
env's `done` or the suite's step limit) from a training init (10-49 only), except that the action sent to the env
is the expert's action plus, during short bursts, a constant random offset on the translation dims 0-2 (a burst
starts with probability --burst-p at each step outside a burst and lasts --burst-len steps; the offset is drawn
per burst from N(0, --sigma^2) per dim; the result is clipped to [-1, 1]). Optional, off by default: the same
bursts also offset the rotation dims 3-5 (N(0, --rot-sigma^2)), and early gripper closes (a burst of --grip-len
steps of "close" starts with probability --grip-p at each step where the expert holds the gripper open), the
early close being the failure the first policies showed. --policy MODEL (DAgger-style): the bursts are driven
by that exported policy instead (plain greedy actions from the release `serve` binary on the frame of the current
state), so the recoveries start from the states the learner itself drifts into; the expert still labels every
step. The expert re-plans from the state it
finds at every step, so the label it gives after a burst is a recovery. The record stores the expert's clean
action as the label (`actions`, `all_actions`) and what was sent (`executed_actions`); only successful episodes
are kept (records.py, format version 3). The noise schedule is a pure function of (suite, task, init, seed), so a
record is reproducible from its name.

Every attempt is a line in <out>/manifest.jsonl keyed by (suite, task_id, init_id, noise_seed); re-running the
same command resumes. Steps are no-op filtered on the labels, as the clean records.
"""
import argparse
import os
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(HERE))  # tools/ (jsonl_log), after site-packages
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
import records  # noqa: E402
from generate import MAX_STEPS, Runner, kept_steps, log  # noqa: E402
from jsonl_log import append_row, read_keyed  # noqa: E402
from closed_loop.client import image_field  # noqa: E402
from closed_loop.episode import invert_gripper_action, normalize_gripper_action  # noqa: E402

NOISY_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "data", "libero_noisy"))
KEY = ("suite", "task_id", "init_id", "noise_seed")


def parse_range(text):
    """'0-2' or '0,3,5' -> list of ints."""
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


class BurstNoise:
    """Bursts of a constant offset on the translation (and optionally rotation) dims, and optionally early
    gripper closes while the expert holds the gripper open; deterministic in (suite, task, init, seed) and the
    recipe. With rot_sigma = 0 and grip_p = 0 (the defaults) it draws exactly the random numbers of the first
    recipe, so the seed-0 records stay reproducible."""

    def __init__(self, suite, task_id, init_id, seed, sigma, burst_p, burst_len, rot_sigma=0.0, grip_p=0.0,
                 grip_len=6):
        import numpy as np
        self.rng = np.random.default_rng([zlib.crc32(suite.encode()), task_id, init_id, seed])
        self.sigma, self.burst_p, self.burst_len = sigma, burst_p, burst_len
        self.rot_sigma, self.grip_p, self.grip_len = rot_sigma, grip_p, grip_len
        self.left, self.offset, self.rot_offset = 0, None, None
        self.grip_left = 0
        self.noisy_steps = 0

    def __call__(self, step, action):
        a = action.copy()
        noisy = False
        if self.left == 0 and self.rng.random() < self.burst_p:
            self.left = self.burst_len
            self.offset = self.rng.normal(0.0, self.sigma, 3)
            if self.rot_sigma > 0:
                self.rot_offset = self.rng.normal(0.0, self.rot_sigma, 3)
        if self.left > 0:
            a[:3] = a[:3] + self.offset
            if self.rot_offset is not None:
                a[3:6] = a[3:6] + self.rot_offset
            self.left -= 1
            noisy = True
        if self.grip_p > 0:
            # the failure this teaches to recover from: the gripper shut before the grasp (label open)
            if self.grip_left == 0 and action[6] < 0 and self.rng.random() < self.grip_p:
                self.grip_left = self.grip_len
            if self.grip_left > 0:
                a[6] = 1.0
                self.grip_left -= 1
                noisy = True
        self.noisy_steps += int(noisy)
        return a


class PolicyBursts:
    """Bursts during which the learner drives (DAgger-style, on the expert's timeline): a burst of --burst-len
    steps starts with probability --burst-p at each step outside one, and during it the action sent is the policy
    server's plain greedy action on the frame of the current state (rendered as the closed loop renders it, gripper
    post-processed as eval.py does); the expert keeps labelling every step. The schedule is a pure function of
    (suite, task, init, seed); the actions, of the policy's weights (its fingerprint goes into the manifest)."""

    def __init__(self, runner, client, unnorm_key, suite, task_id, init_id, seed, burst_p, burst_len):
        import numpy as np
        self.rng = np.random.default_rng([zlib.crc32(suite.encode()), task_id, init_id, seed, 1])
        self.runner, self.client, self.unnorm_key = runner, client, unnorm_key
        self.burst_p, self.burst_len = burst_p, burst_len
        self.left = 0
        self.noisy_steps = 0

    def __call__(self, step, action):
        import numpy as np
        if self.left == 0 and self.rng.random() < self.burst_p:
            self.left = self.burst_len
        if self.left == 0:
            return action.copy()
        self.left -= 1
        self.noisy_steps += 1
        frame = self.runner.render([self.runner.env.get_sim_state()])[0]
        ans = self.client.request("POST", "/act", {"image": image_field(frame), "instruction": self.runner.instruction,
                                                   "unnorm_key": self.unnorm_key, "decoder": "plain",
                                                   "return_stats": True})  # then "action" is a plain list
        a = np.asarray(ans.get("action"), dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise RuntimeError(f"the policy server answered the action {ans.get('action')!r}, not a finite 7-D one")
        return invert_gripper_action(normalize_gripper_action(a, binarize=True))


def policy_client(model, log_path):
    """Spawn the release `serve` binary on `model` (plain decoding only is asked of it); returns (server, client,
    /info)."""
    from closed_loop.client import Client, SpawnedServer
    root = os.path.normpath(os.path.join(HERE, "..", ".."))
    server = SpawnedServer(os.path.join(root, "target", "release", "examples", "serve"),
                           ["--model", model, "--threads", "1", "--decoder", "plain"], log_path, root)
    try:
        client = Client(server.url)
        return server, client, client.request("GET", "/info")
    except BaseException:
        server.stop()
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=NOISY_DIR, help="noisy records + manifest.jsonl (committed to git)")
    ap.add_argument("--suites", default="libero_goal")
    ap.add_argument("--tasks", default="1", help="task ids, e.g. 1,2,4,9")
    ap.add_argument("--inits", default="10-49", help="training init ids (10-49); 0-9 are refused")
    ap.add_argument("--seeds", default="0-1", help="noise seeds per init, e.g. 0-2")
    ap.add_argument("--sigma", type=float, default=0.6, help="std of the burst offset per translation dim")
    ap.add_argument("--burst-p", type=float, default=0.04, help="chance a burst starts at a step outside one")
    ap.add_argument("--burst-len", type=int, default=8, help="steps per burst")
    ap.add_argument("--rot-sigma", type=float, default=0.0, help="std of a burst's offset per rotation dim (0: off)")
    ap.add_argument("--grip-p", type=float, default=0.0, help="chance per step, while the expert holds the gripper "
                    "open, that a burst of early closing starts (0: off)")
    ap.add_argument("--grip-len", type=int, default=6, help="steps per early-closing burst")
    ap.add_argument("--policy", default="", help="an exported model folder: instead of noise, the bursts are driven "
                    "by this policy through the release serve binary (--sigma/--rot-sigma/--grip-p are then unused)")
    ap.add_argument("--shard", default="0/1", help="i/n: this worker runs every n-th (task, init)")
    args = ap.parse_args()

    inits = parse_range(args.inits)
    for i in inits:
        try:
            records.check_train_init(i)
        except records.RecordError as exc:
            sys.exit(f"generate_noisy.py: --inits: {exc}")
    problems = check_env.check(args.out)
    if problems:
        sys.exit(check_env.report(problems))
    import numpy as np
    from expert import EXPERT_VERSION

    manifest = os.path.join(args.out, "manifest.jsonl")
    seeds = parse_range(args.seeds)
    suites = [s for s in args.suites.split(",") if s]
    tasks = parse_range(args.tasks)
    shard_i, shard_n = (int(x) for x in args.shard.split("/"))
    pairs = [(s, t, i) for s in suites for t in tasks for i in inits]
    pairs = [p for k, p in enumerate(pairs) if k % shard_n == shard_i]
    done = read_keyed(manifest, KEY)
    log(f"resume: {len(done)} attempts in {manifest}; {len(pairs)} (task, init) pairs x {len(seeds)} seeds here")
    runner = server = client = None
    policy = {}
    try:
        if args.policy:
            from closed_loop.client import unnorm_keys
            server, client, info = policy_client(args.policy, os.path.join(HERE, "out", "generate_noisy_server.log"))
            policy = {"policy": info.get("model"), "policy_fingerprint": info.get("model_fingerprint")}
            unnorm = unnorm_keys(info, suites)
        key = None
        n_ok = n_all = 0
        t_start, sim_steps, sim_s = time.time(), 0, 0.0
        for suite, task_id, init_id in pairs:
            todo = [sd for sd in seeds if (suite, task_id, init_id, sd) not in done]
            if not todo:
                continue
            if key != (suite, task_id):
                if runner:
                    runner.close()
                runner, key = Runner(suite, task_id), (suite, task_id)
            nq = runner.env.env.sim.model.nq
            for seed in todo:
                if args.policy:
                    noise = PolicyBursts(runner, client, unnorm[suite], suite, task_id, init_id, seed, args.burst_p,
                                         args.burst_len)
                else:
                    noise = BurstNoise(suite, task_id, init_id, seed, args.sigma, args.burst_p, args.burst_len,
                                       args.rot_sigma, args.grip_p, args.grip_len)
                t1 = time.time()
                success, states, labels, supported = runner.rollout(init_id, MAX_STEPS[suite], perturb=noise)
                t_sim = time.time() - t1
                sim_steps += len(labels)
                sim_s += t_sim
                rel, kept, size = None, 0, 0
                if success:
                    keep = kept_steps(labels)
                    S = np.stack([states[k] for k in keep])
                    rel = records.noisy_rel_path(suite, task_id, init_id, seed)
                    path = os.path.join(args.out, rel)
                    records.save_noisy_record(
                        path, suite=suite, task_id=task_id, init_id=init_id, instruction=runner.instruction,
                        actions=np.stack([labels[k] for k in keep]), step=np.array(keep), qpos=S[:, 1:1 + nq],
                        state0=states[0], all_actions=np.stack(labels), expert_version=EXPERT_VERSION,
                        body_pos=runner.body_pos, body_quat=runner.body_quat,
                        executed_actions=np.stack(runner.executed), noise_seed=seed,
                        noise_scale=0.0 if args.policy else args.sigma)
                    size = os.path.getsize(path)
                    kept = len(keep)
                    n_ok += 1
                n_all += 1
                row = {"suite": suite, "task_id": task_id, "init_id": init_id, "noise_seed": seed,
                       "instruction": runner.instruction, "steps": len(labels), "frames": kept,
                       "noisy_steps": noise.noisy_steps, "success": bool(success), "file": rel, "split": "train",
                       "expert_supported": bool(supported), "expert_version": EXPERT_VERSION,
                       "sigma": 0.0 if args.policy else args.sigma, "burst_p": args.burst_p, "burst_len": args.burst_len,
                       **({"recipe": "policy", **policy} if args.policy else
                          {"rot_sigma": args.rot_sigma, "grip_p": args.grip_p, "grip_len": args.grip_len}),
                       "sim_s": round(t_sim, 2), "bytes": size}
                append_row(manifest, row)
                done[(suite, task_id, init_id, seed)] = row
                log(f"{suite} task{task_id:02d} init{init_id:02d} n{seed:02d} success={success} steps={len(labels)} "
                    f"noisy={noise.noisy_steps} kept={kept} | {n_ok}/{n_all} ok | "
                    f"sim {sim_steps / max(sim_s, 1e-9):.1f} steps/s, elapsed {(time.time() - t_start) / 60:.1f} min")
    finally:  # a failed server or an interrupt must not leave the spawned server running
        if runner:
            runner.close()
        if client:
            client.close()
        if server:
            server.stop()
    log("finished")


if __name__ == "__main__":
    main()
