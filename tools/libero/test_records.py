"""Checks of records.py without the simulator: a record round-trips, and bad input gets a clear RecordError and
loses nothing (torn/truncated file, another suite's file, wrong format version, manifest mismatch, evaluation
init ids, noise-injected records in a clean folder and clean ones in a noisy folder).

  tools/.venv-libero/bin/python tools/libero/test_records.py      # prints "ok" and exits 0
"""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

import records  # noqa: E402


def expect_error(fn, *needles):
    try:
        fn()
    except records.RecordError as exc:
        msg = str(exc)
        for n in needles:
            assert n in msg, f"{n!r} not in {msg!r}"
        return msg
    raise AssertionError("no RecordError")


def main():
    tmp = tempfile.mkdtemp()
    try:
        rng = np.random.default_rng(0)
        T, N, nq, nv = 12, 15, 9, 8
        step = np.sort(rng.choice(N, T, replace=False))
        all_actions = rng.uniform(-1, 1, (N, 7)).astype(np.float32)
        kw = dict(suite="libero_goal", task_id=3, init_id=17, instruction="open the top drawer",
                  actions=all_actions[step], step=step, qpos=rng.normal(size=(T, nq)),
                  state0=rng.normal(size=1 + nq + nv), all_actions=all_actions, expert_version=2,
                  body_pos=rng.normal(size=(5, 3)), body_quat=rng.normal(size=(5, 4)))
        good = os.path.join(tmp, records.rel_path("libero_goal", 3, 17))
        records.save_record(good, **kw)
        r = records.load_record(good, {"suite": "libero_goal", "task_id": 3, "init_id": 17, "frames": T})
        assert r["qpos"].dtype == np.float64 and np.array_equal(r["qpos"], kw["qpos"])
        assert np.array_equal(r["actions"], all_actions[step]) and r["instruction"] == kw["instruction"]
        assert not [f for f in os.listdir(os.path.dirname(good)) if ".tmp" in f]

        # evaluation-only init ids are refused for training, at save and at load
        expect_error(lambda: records.save_record(os.path.join(tmp, records.rel_path("libero_goal", 3, 5)),
                                                 **{**kw, "init_id": 5}), "evaluation-only")
        expect_error(lambda: records.check_train_init(9), "init ids 0-9 are evaluation-only")
        # torn / truncated
        data = open(good, "rb").read()
        for cut in (len(data) // 2, len(data) - 30, 10, 0):
            torn = os.path.join(tmp, "torn", "libero_goal", "task03_init17.npz")
            os.makedirs(os.path.dirname(torn), exist_ok=True)
            open(torn, "wb").write(data[:cut])
            expect_error(lambda: records.load_record(torn), "torn or corrupt record", torn)
        # a flipped byte inside the compressed data
        bad = bytearray(data)
        bad[len(bad) // 3] ^= 0xFF
        open(torn, "wb").write(bytes(bad))
        expect_error(lambda: records.load_record(torn), torn)
        # another suite's file under this suite's path
        other = os.path.join(tmp, "libero_spatial", "task03_init17.npz")
        os.makedirs(os.path.dirname(other), exist_ok=True)
        shutil.copy(good, other)
        expect_error(lambda: records.load_record(other), "another suite", "libero_goal task 3 init 17",
                     "libero_spatial task 3 init 17")
        # wrong format version
        z = dict(np.load(good))
        z["format_version"] = np.array(records.RECORD_FORMAT + 1)
        vpath = os.path.join(tmp, "v", "libero_goal", "task03_init17.npz")
        os.makedirs(os.path.dirname(vpath), exist_ok=True)
        np.savez_compressed(vpath, **z)
        expect_error(lambda: records.load_record(vpath), "format version")
        # manifest row of another task / other length
        expect_error(lambda: records.load_record(good, {"suite": "libero_goal", "task_id": 4, "init_id": 17}),
                     "manifest row")
        expect_error(lambda: records.load_record(good, {"suite": "libero_goal", "task_id": 3, "init_id": 17,
                                                        "frames": T + 1}), "manifest row")
        # not a record path
        expect_error(lambda: records.parse_path(os.path.join(tmp, "x.npz")), "not a record path")
        # noise-injected records (format version 3): round trip, and never mixed with clean ones
        executed = np.clip(all_actions + 0.5, -1, 1)
        noisy = os.path.join(tmp, "noisy", records.noisy_rel_path("libero_goal", 3, 17, 2))
        records.save_noisy_record(noisy, executed_actions=executed, noise_seed=2, noise_scale=0.6, **kw)
        n = records.load_record(noisy, {"suite": "libero_goal", "task_id": 3, "init_id": 17, "noise_seed": 2,
                                        "frames": T}, noisy=True)
        assert np.array_equal(n["actions"], all_actions[step]) and np.array_equal(n["executed_actions"], executed)
        assert n["noise_seed"] == 2 and n["noise_scale"] == 0.6
        expect_error(lambda: records.save_noisy_record(os.path.join(tmp, "noisy", records.rel_path("libero_goal", 3,
                     17)), executed_actions=executed, noise_seed=2, noise_scale=0.6, **kw), "must be saved as")
        # ... a noisy record read as a clean one (by name, and by content under a clean name)
        expect_error(lambda: records.load_record(noisy), "format version 3", "noise-injected record")
        expect_error(lambda: records.parse_path(noisy), "noise-injected record in a clean-record folder")
        disguised = os.path.join(tmp, "disguised", records.rel_path("libero_goal", 3, 17))
        os.makedirs(os.path.dirname(disguised), exist_ok=True)
        shutil.copy(noisy, disguised)
        expect_error(lambda: records.load_record(disguised), "format version 3", "noise-injected")
        # ... a clean record where noisy ones are expected
        expect_error(lambda: records.load_record(good, noisy=True), "clean record where noise-injected")
        renamed = os.path.join(tmp, "renamed", records.noisy_rel_path("libero_goal", 3, 17, 0))
        os.makedirs(os.path.dirname(renamed), exist_ok=True)
        shutil.copy(good, renamed)
        expect_error(lambda: records.load_record(renamed, noisy=True), "format version 2", "clean record")
        # ... a noisy record whose manifest row names another noise seed
        expect_error(lambda: records.load_record(noisy, {"suite": "libero_goal", "task_id": 3, "init_id": 17,
                                                         "noise_seed": 1}, noisy=True), "manifest row")
        # nothing was deleted
        assert os.path.exists(good) and os.path.exists(torn) and os.path.exists(other)
        assert os.path.exists(noisy) and os.path.exists(disguised) and os.path.exists(renamed)
        print("ok")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
