#!/usr/bin/env python3
"""Does the closed-loop harness count a success when the actions succeed? Runs `closed_loop.episode.run_episode`
(the exact loop eval.py runs: per-episode seed, reset, gripper reset, warm-up, a frame rendered each step, the
gripper post-processing, success = env `done`) with the scripted expert in place of the policy server: a stub
client answers each `/act` with the expert's action for the current state, written in OpenVLA's output convention
(gripper 1 = open, 0 = close, as the policy's de-normalised action), so the harness's
`normalize_gripper_action` + `invert_gripper_action` must map it back to LIBERO's -1 open / +1 close for the
expert to succeed.

    MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/check_harness.py            # default episodes
    MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/check_harness.py \\
        --episodes libero_object/0/0,libero_goal/1/1

The default episodes are held-out (suite, task, init) on which the expert succeeded when the held-out set was
made (data/libero_heldout/expert_success.json, heldout_runs.py's own loop). Prints one line per episode and
exits 1 unless the harness reports success on every one: an all-failure evaluation then says something about
the policy, not about the harness. `--negative-control` sends the expert's gripper in LIBERO's convention
instead, as a server that skipped the policy's convention would, and exits 1 unless every episode then fails:
the check can tell a broken gripper mapping from a working one. Its default episodes grasp a bottle and a box:
libero_spatial task 0 still succeeds with the gripper inverted (measured: 119 steps), the fingers, opening
inside the black bowl, hold it from within. Writes nothing.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
from generate import MAX_STEPS, Runner, log  # noqa: E402

from closed_loop.episode import SEED, run_episode  # noqa: E402

DEFAULT_EPISODES = "libero_spatial/0/0,libero_object/3/1,libero_goal/6/0,libero_10/5/2"
NEGATIVE_EPISODES = "libero_object/3/1,libero_goal/6/0"


class ExpertClient:
    """Stands in for closed_loop.client.Client: `/act` answers with the scripted expert's action. The expert is
    reset on the episode's first request (`reset: true`), which run_episode sends after the warm-up, where
    generate.py resets it too."""

    def __init__(self, env, raw_gripper=False):
        self.env = env
        self.raw_gripper = raw_gripper
        self.expert = None
        self.retries = 0

    def request(self, method, path, body=None):
        import numpy as np
        from expert import Expert
        if (method, path) != ("POST", "/act"):
            raise ValueError(f"the expert stub answers POST /act only, not {method} {path}")
        if body.get("reset") or self.expert is None:
            self.expert = Expert()
            self.expert.reset(self.env)
        a = np.clip(np.asarray(self.expert.act(None), dtype=np.float64), -1.0, 1.0)
        out = a.copy()
        if not self.raw_gripper:
            out[6] = 1.0 - np.clip(a[6], 0.0, 1.0)  # LIBERO gripper -> the policy's (1 open, 0 close)
        return {"action": out.tolist(), "tokens": [0] * 7, "decoder": "expert", "stats": {}, "episode": None}


def parse_episodes(spec):
    out = []
    for part in spec.split(","):
        try:
            suite, task, init = part.strip().split("/")
            out.append((suite, int(task), int(init)))
        except ValueError:
            sys.exit(f"check_harness.py: --episodes: {part!r} is not SUITE/TASK/INIT")
        if out[-1][0] not in MAX_STEPS:
            sys.exit(f"check_harness.py: --episodes: unknown suite {suite!r}")
        if not 0 <= out[-1][2] <= 9:
            sys.exit(f"check_harness.py: --episodes: init {init} is not a held-out init id (0-9)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", default="", help=f"comma-separated SUITE/TASK/INIT (default {DEFAULT_EPISODES}; "
                    f"with --negative-control {NEGATIVE_EPISODES})")
    ap.add_argument("--expert-success", default=os.path.join(ROOT, "data", "libero_heldout", "expert_success.json"))
    ap.add_argument("--negative-control", action="store_true",
                    help="send the gripper unconverted (LIBERO's -1 open / +1 close); every episode must fail")
    args = ap.parse_args()
    episodes = parse_episodes(args.episodes or (NEGATIVE_EPISODES if args.negative_control else DEFAULT_EPISODES))
    problems = check_env.check(os.path.join(HERE, "out"))
    if problems:
        sys.exit(check_env.report(problems))
    with open(args.expert_success) as f:
        known = json.load(f)["tasks"]

    failed = 0
    for suite, task_id, init_id in episodes:
        before = known.get(f"{suite}/task{task_id:02d}", {}).get("inits", {}).get(str(init_id))
        runner = Runner(suite, task_id)
        try:
            t0 = time.time()
            client = ExpertClient(runner.env, raw_gripper=args.negative_control)
            rec, _ = run_episode(runner, client, suite, task_id, init_id, "expert", "expert",
                                 MAX_STEPS[suite], f"{suite}_no_noops", SEED, want_gif=False)
        finally:
            runner.close()
        ok = rec["error"] is None and rec["success"] != args.negative_control
        failed += not ok
        log(f"{suite} task{task_id:02d} init{init_id:02d}: harness success={rec['success']} in "
            f"{rec['steps']}/{rec['max_steps']} steps ({time.time() - t0:.0f} s); the expert's own loop: "
            f"{'success' if before else 'failure' if before is False else 'not run'}"
            + (f"; error {rec['error']}" if rec["error"] else ""))
    want = "failures (negative control: gripper unconverted)" if args.negative_control else "successes"
    log(f"{len(episodes) - failed}/{len(episodes)} expert episodes counted as {want} by the harness")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
