#!/usr/bin/env python3
"""Checks of closed_loop/lockstep.py and its rows in the report, without the simulator (numpy only):

    tools/.venv-libero/bin/python tools/libero/test_lockstep.py      # prints "ok" and exits 0

A lockstep copy keeps plain's episode only while its tokens and action equal plain's at every step; after a
difference it records nothing (so eval.py runs that decoder's own episode); its row carries its own statistics
and only its own call time, and the report counts it as strict's episode but not as a simulator episode.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

from closed_loop.episode import pack_tokens, sha1  # noqa: E402
from closed_loop.lockstep import LockstepCopy, run_copies  # noqa: E402
from closed_loop.report import build_report  # noqa: E402
from closed_loop.results import result_key  # noqa: E402


class FakeClient:
    """Answers /act from a script of (tokens, action) per episode id, and keeps the bodies it got."""

    def __init__(self, script):
        self.script, self.bodies = script, []

    def request(self, method, path, body):
        assert (method, path) == ("POST", "/act")
        self.bodies.append(body)
        step = sum(1 for b in self.bodies if b["episode_id"] == body["episode_id"]) - 1
        tokens, action = self.script[body["episode_id"]][step]
        return {"tokens": tokens, "action": action, "decoder": "strict",
                "stats": {"tokens_per_pass": [3, 4], "drafts_per_pass": [2, 3], "verifier_passes": 2,
                          "drafted_tokens": 5, "origins": [{}] * 7, "times_ms": {"decode": 1.5}},
                "episode": {"fresh": step == 0}}


def primary_rec(tokens, actions):
    return {"suite": "libero_goal", "task_id": 1, "init_id": 0, "placement": 0, "decoder": "plain",
            "request_decoder": "plain", "answer_decoder": "plain", "success": True, "steps": len(tokens),
            "max_steps": 300, "error": None, "episode_id": "eval/x/plain/1", "scene_sha1": "s", "init_sha1": "i",
            "instruction": "put the bowl on the stove",
            "tokens_sha1": sha1(np.asarray(tokens, dtype="<u2")), "actions_sha1": "a",
            "raw_actions_sha1": sha1(np.stack(actions).astype("<f8")), "tokens_z": pack_tokens(tokens),
            "stats": {"calls": len(tokens), "action_tokens": 7 * len(tokens), "tokens": 7 * len(tokens),
                      "verifier_passes": 7 * len(tokens), "decode_ms": 9.0, "policy_ms": 20.0},
            "times": {"wall_s": 30.0, "warmup_s": 1.0, "render_s": 25.0, "client_s": 2.0, "env_s": 3.0,
                      "loadavg": 2.0}}


def main():
    tokens = [[300 + s] * 7 for s in range(3)]
    actions = [np.full(7, 0.1 * s) for s in range(3)]
    other = [t[:] for t in tokens]
    other[1][3] += 1
    shifted = [a.copy() for a in actions]
    shifted[2][0] += 1e-6
    script = {"same": list(zip(tokens, [a.tolist() for a in actions])),
              "other_tokens": list(zip(other, [a.tolist() for a in actions])),
              "other_action": list(zip(tokens, [a.tolist() for a in shifted]))}
    client = FakeClient(script)
    copies = [LockstepCopy("strict", "strict", eid) for eid in script]
    for step in range(3):
        body = {"image": "frame", "decoder": "plain", "episode_id": "eval/x/plain/1", "reset": step == 0}
        spent = run_copies(copies, client, body, step, tokens[step], actions[step])
        assert spent >= 0.0
    same, other_tokens, other_action = copies
    assert same.alive and (other_tokens.diverged_at, other_action.diverged_at) == (1, 2)
    # a stopped copy is not asked again; every body carries the copy's decoder, episode id and the same frame
    assert [b["episode_id"] for b in client.bodies].count("other_tokens") == 2
    assert all(b["image"] == "frame" and b["decoder"] == "strict" for b in client.bodies)
    assert [b["reset"] for b in client.bodies if b["episode_id"] == "same"] == [True, False, False]

    plain = primary_rec(tokens, actions)
    assert other_tokens.record(plain, "plain") is None and other_action.record(plain, "plain") is None
    rec = same.record(plain, "plain")
    assert rec["decoder"] == "strict" and rec["lockstep_of"] == "plain" and rec["episode_id"] == "same"
    assert rec["tokens_sha1"] == plain["tokens_sha1"] and rec["raw_actions_sha1"] == plain["raw_actions_sha1"]
    assert rec["success"] and rec["steps"] == 3
    assert rec["stats"]["verifier_passes"] == 6 and rec["stats"]["decode_ms"] == 4.5, rec["stats"]
    assert rec["times"]["render_s"] == 0.0 and rec["times"]["env_s"] == 0.0
    assert plain["decoder"] == "plain" and plain["stats"]["verifier_passes"] == 21  # the primary is untouched

    rows = {result_key(r): r for r in (plain, rec)}
    rep = build_report(rows, [])
    chk = rep["strict_equals_plain"][0]
    assert (chk["compared"], chk["identical"], chk["lockstep"]) == (1, 1, 1), chk
    thr = rep["throughput"]
    assert thr["episodes"] == 1 and thr["lockstep_episodes"] == 1, thr
    assert thr["render_s_per_step"] == round(25.0 / 3, 3), thr
    strict = next(c for c in rep["configs"] if c["name"] == "strict")
    assert strict["episodes"] == 1 and strict["successes"] == 1 and strict["decode_speedup"] == 2.0, strict
    print("ok")


if __name__ == "__main__":
    main()
