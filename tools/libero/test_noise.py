"""Checks of generate_noisy.BurstNoise without the simulator.

  MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/test_noise.py      # prints "ok" and exits 0

1. The default recipe reproduces the committed seed-0 records: replaying BurstNoise on a record's labels gives
   its stored executed actions exactly (so adding recipe options did not move the old random draws).
2. The early-close option only closes the gripper where the label holds it open, and the rotation option
   offsets dims 3-5 only during a burst.
3. PolicyBursts (with a stand-in server and renderer): outside a burst the expert's action goes through
   untouched; inside, the server's action with eval.py's gripper post-processing; a non-finite or misshaped
   answer is an error, never an action.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

import generate_noisy  # noqa: E402
import records  # noqa: E402
from jsonl_log import read_keyed  # noqa: E402


def replay(rec, row, **recipe):
    noise = generate_noisy.BurstNoise(str(rec["suite"]), int(rec["task_id"]), int(rec["init_id"]),
                                      int(rec["noise_seed"]), row["sigma"], row["burst_p"], row["burst_len"], **recipe)
    labels = rec["all_actions"].astype(np.float64)
    return np.stack([np.clip(noise(k, labels[k]), -1.0, 1.0) for k in range(len(labels))]), noise


def main():
    manifest = os.path.join(generate_noisy.NOISY_DIR, "manifest.jsonl")
    rows = read_keyed(manifest, generate_noisy.KEY)
    seed0 = [r for r in rows.values() if r["noise_seed"] == 0 and r["success"] and not r.get("grip_p")][:6]
    assert len(seed0) == 6, f"expected committed seed-0 records in {manifest}"
    for row in seed0:
        rec = records.load_record(os.path.join(generate_noisy.NOISY_DIR, row["file"]), row, noisy=True)
        executed, noise = replay(rec, row)
        stored = rec["executed_actions"]
        assert executed.shape == stored.shape, (executed.shape, stored.shape)
        np.testing.assert_allclose(executed, stored, rtol=0, atol=1e-6, err_msg=row["file"])
        assert noise.noisy_steps == row["noisy_steps"], (noise.noisy_steps, row["noisy_steps"])

    # early closes and rotation offsets on a synthetic label stream: open for 60 steps, then closed
    labels = np.zeros((120, 7))
    labels[:60, 6], labels[60:, 6] = -1.0, 1.0
    noise = generate_noisy.BurstNoise("libero_goal", 1, 10, 7, 0.6, 0.2, 8, rot_sigma=0.3, grip_p=0.2, grip_len=6)
    out = np.stack([noise(k, labels[k]) for k in range(len(labels))])
    closed_early = np.flatnonzero(out[:60, 6] > 0)
    assert len(closed_early) > 0, "grip_p=0.2 over 60 open steps never closed the gripper"
    assert np.all(out[60:, 6] == 1.0), "a closed label must stay closed"
    moved = np.flatnonzero(np.abs(out[:, :6]).sum(1) > 0)
    assert len(moved) > 0 and np.all(np.abs(out[moved, 3:6]).sum(1) > 0), "rotation offsets follow the bursts"
    quiet = np.flatnonzero(np.abs(out[:, :6]).sum(1) == 0)
    assert len(quiet) > 0, "outside bursts the arm dims are the label's"
    policy_bursts()
    print("ok")


class FakeRunner:
    instruction = "put the bowl on the stove"

    class env:  # noqa: N801 - stands in for the LIBERO env
        @staticmethod
        def get_sim_state():
            return np.zeros(3)

    def render(self, states):
        return np.zeros((len(states), 224, 224, 3), dtype=np.uint8)


class FakeClient:
    def __init__(self, action):
        self.action, self.bodies = action, []

    def request(self, method, path, body):
        assert (method, path) == ("POST", "/act") and body["decoder"] == "plain", (method, path, body)
        self.bodies.append(body)
        return {"action": self.action}


def policy_bursts():
    expert = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.0, -1.0])
    server_action = [0.5, 0.5, -0.5, 0.01, 0.02, 0.03, 0.9]  # gripper 0.9 of [0, 1] (open) -> LIBERO's -1
    client = FakeClient(server_action)
    bursts = generate_noisy.PolicyBursts(FakeRunner(), client, "libero_goal_no_noops", "libero_goal", 1, 10, 10,
                                         0.1, 5)
    out = np.stack([bursts(k, expert) for k in range(200)])
    driven = np.flatnonzero(np.any(out != expert, axis=1))
    assert len(driven) == bursts.noisy_steps == len(client.bodies) > 0, (len(driven), bursts.noisy_steps)
    assert np.allclose(out[driven, :6], server_action[:6]) and np.all(out[driven, 6] == -1.0)
    again = generate_noisy.PolicyBursts(FakeRunner(), FakeClient(server_action), "libero_goal_no_noops",
                                        "libero_goal", 1, 10, 10, 0.1, 5)
    assert np.array_equal(np.stack([again(k, expert) for k in range(200)]), out), "the schedule is deterministic"
    for bad in ([0.0] * 6, [float("nan")] * 7, None):
        b = generate_noisy.PolicyBursts(FakeRunner(), FakeClient(bad), "k", "libero_goal", 1, 10, 10, 1.0, 5)
        try:
            b(0, expert)
        except RuntimeError as exc:
            assert "not a finite 7-D one" in str(exc), exc
        else:
            raise AssertionError(f"answer {bad!r} was accepted")


if __name__ == "__main__":
    main()
