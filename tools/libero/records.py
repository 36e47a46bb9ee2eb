"""Compact, committed training-episode records (data/libero_train/<suite>/taskTT_initII.npz).

A record holds what is needed to re-render an episode's frames exactly (render_records.py) and to train on it,
but no pixels. np.savez_compressed keys (format version 2):

  format_version  int64 0-d     RECORD_FORMAT (2)
  suite           unicode 0-d   e.g. "libero_goal"
  task_id         int64 0-d     benchmark task index (0-9)
  init_id         int64 0-d     index into get_task_init_states(task); training records: 10-49 only
  instruction     unicode 0-d   task.language (not lower-cased)
  actions         float32 [T,7] the action sent to the env at each kept step (LIBERO convention, gripper -1/+1)
  step            int64 [T]     index of each kept step among the expert's control steps (after the warm-up)
  qpos            float64 [T,nq] MuJoCo qpos before each kept step (what the frame is rendered from)
  state0          float64 [1+nq+nv] full flattened MuJoCo state (time, qpos, qvel) before control step 0
  all_actions     float32 [N,7] every action the expert sent (no-ops included), N = steps of the episode
  expert_version  int64 0-d     expert.EXPERT_VERSION that produced it
  body_pos        float64 [nbody,3]  MuJoCo model.body_pos during the episode
  body_quat       float64 [nbody,4]  MuJoCo model.body_quat during the episode

Why body_pos/body_quat: env.reset() places the fixtures (cabinet, stove, ...) with a random sampler by moving
their bodies in the *model* (about 1 cm from reset to reset); that is not part of the simulator state, so a
frame re-rendered from qpos alone shows the fixtures in the wrong place (format version 1 had this bug).

Why qpos and not the full state: the rendered frame depends on qpos only (frames rendered with qvel zeroed are
pixel-identical), float32 states are not pixel-exact (up to 21/255 on object edges), and full float64 states are
~3.4x larger than float64 qpos.

Noise-injected records (format version 3, DART-style recoveries; generate_noisy.py -> data/libero_noisy/): the
episode was driven by the expert's action plus short bursts of noise on the translation dims, and the labels are
the expert's clean actions. They hold every version-2 key with `actions` / `all_actions` the clean LABELS, plus

  executed_actions float32 [N,7] what was actually sent to the env at each control step (label + noise, clipped)
  noise_seed       int64 0-d     seed of the noise schedule (one record per (task, init, seed))
  noise_scale      float64 0-d   standard deviation of the noise added during a burst (action units)

and live at <suite>/taskTT_initII_nSS.npz (SS = noise_seed). They are read only with load_record(...,
noisy=True); a version-3 record in a clean folder (or a clean one where noisy ones are expected) is refused
with that reason, so noise labels can never be mixed silently into the clean data.

load_record() raises RecordError (with the path and the reason) for a torn/truncated file, a wrong format
version, missing keys, inconsistent shapes, suite/task/init that do not match the file's path or its manifest
row, and a training record from an evaluation-only init id (0-9).
"""
import os
import re
import zipfile

RECORD_FORMAT = 2
NOISY_RECORD_FORMAT = 3
TRAIN_INITS = range(10, 50)  # init ids 0-9 of every task are evaluation-only
EVAL_INITS = range(0, 10)
KEYS = ("format_version", "suite", "task_id", "init_id", "instruction", "actions", "step", "qpos", "state0",
        "all_actions", "expert_version", "body_pos", "body_quat")
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
NOISY_KEYS = KEYS + ("executed_actions", "noise_seed", "noise_scale")
_NAME = re.compile(r"^task(\d\d)_init(\d\d)\.npz$")
_NOISY_NAME = re.compile(r"^task(\d\d)_init(\d\d)_n(\d\d)\.npz$")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file and the reason."""


def check_train_init(init_id):
    if int(init_id) not in TRAIN_INITS:
        raise RecordError(f"init id {init_id} is not a training init: training uses init ids "
                          f"{TRAIN_INITS.start}-{TRAIN_INITS.stop - 1}; init ids 0-9 are evaluation-only")


def rel_path(suite, task_id, init_id):
    return f"{suite}/task{int(task_id):02d}_init{int(init_id):02d}.npz"


def noisy_rel_path(suite, task_id, init_id, noise_seed):
    return f"{suite}/task{int(task_id):02d}_init{int(init_id):02d}_n{int(noise_seed):02d}.npz"


def parse_path(path, noisy=False):
    """(suite, task_id, init_id) from .../<suite>/taskTT_initII.npz, or with noisy=True
    (suite, task_id, init_id, noise_seed) from .../<suite>/taskTT_initII_nSS.npz; RecordError otherwise."""
    name = os.path.basename(path)
    m = (_NOISY_NAME if noisy else _NAME).match(name)
    suite = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if not m or suite not in SUITES:
        other = (_NAME if noisy else _NOISY_NAME).match(name)
        why = ""
        if other:
            why = (" (a clean record where noise-injected ones are expected)" if noisy
                   else " (a noise-injected record in a clean-record folder)")
        want = "taskTT_initII_nSS.npz" if noisy else "taskTT_initII.npz"
        raise RecordError(f"{path}: not a {'noise-injected ' if noisy else ''}record path (expected <suite>/{want}, "
                          f"suite one of {', '.join(SUITES)}){why}")
    return (suite,) + tuple(int(g) for g in m.groups())


def save_record(path, *, suite, task_id, init_id, instruction, actions, step, qpos, state0, all_actions,
                expert_version, body_pos, body_quat):
    """Atomic write (temp file + rename): a killed writer leaves no torn record under the final name."""
    check_train_init(init_id)
    _write_atomic(path, _record_arrays(suite=suite, task_id=task_id, init_id=init_id, instruction=instruction,
                                       actions=actions, step=step, qpos=qpos, state0=state0, all_actions=all_actions,
                                       expert_version=expert_version, body_pos=body_pos, body_quat=body_quat))


def save_noisy_record(path, *, executed_actions, noise_seed, noise_scale, **clean):
    """A noise-injected record (format version 3): `clean` holds save_record's keyword arguments with the
    expert's clean actions as `actions` / `all_actions`; `executed_actions` [N,7] is what was sent."""
    import numpy as np
    check_train_init(clean["init_id"])
    want = noisy_rel_path(clean["suite"], clean["task_id"], clean["init_id"], noise_seed)
    if not path.endswith(want):
        raise RecordError(f"{path}: a noise-injected record must be saved as <folder>/{want}")
    arrays = _record_arrays(**clean)
    arrays.update(format_version=np.array(NOISY_RECORD_FORMAT, dtype=np.int64),
                  executed_actions=np.asarray(executed_actions, dtype=np.float32),
                  noise_seed=np.array(noise_seed, dtype=np.int64), noise_scale=np.array(noise_scale, dtype=np.float64))
    _write_atomic(path, arrays)


def _write_atomic(path, arrays):
    """np.savez_compressed to a temp file, fsynced, then renamed: a killed writer leaves no torn record."""
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _record_arrays(*, suite, task_id, init_id, instruction, actions, step, qpos, state0, all_actions,
                   expert_version, body_pos, body_quat):
    import numpy as np
    return dict(
        format_version=np.array(RECORD_FORMAT, dtype=np.int64), suite=np.array(suite),
        task_id=np.array(task_id, dtype=np.int64), init_id=np.array(init_id, dtype=np.int64),
        instruction=np.array(instruction), actions=np.asarray(actions, dtype=np.float32),
        step=np.asarray(step, dtype=np.int64), qpos=np.asarray(qpos, dtype=np.float64),
        state0=np.asarray(state0, dtype=np.float64), all_actions=np.asarray(all_actions, dtype=np.float32),
        expert_version=np.array(expert_version, dtype=np.int64),
        body_pos=np.asarray(body_pos, dtype=np.float64), body_quat=np.asarray(body_quat, dtype=np.float64))


def load_record(path, manifest_row=None, train=True, noisy=False):
    """Load and validate a record; returns a dict of numpy arrays / python scalars. Raises RecordError.

    noisy=False reads clean version-2 records only; noisy=True reads noise-injected version-3 records only."""
    import numpy as np
    if not os.path.isfile(path):
        raise RecordError(f"{path}: record file missing")
    fmt, keys = (NOISY_RECORD_FORMAT, NOISY_KEYS) if noisy else (RECORD_FORMAT, KEYS)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if "format_version" in z.files and int(z["format_version"]) != fmt:
                v = int(z["format_version"])
                why = ""
                if v == 1:
                    why = (" (version 1 lacks the fixture placement, its frames cannot be re-rendered; "
                           "regenerate the episode)")
                elif v == NOISY_RECORD_FORMAT:
                    why = (" (a noise-injected record: its labels differ from the actions executed; it belongs in a "
                           "noisy-record folder and is read with noisy=True)")
                elif v == RECORD_FORMAT and noisy:
                    why = " (a clean record where noise-injected records are expected)"
                raise RecordError(f"{path}: record format version {v}, this code reads version {fmt} here" + why)
            if missing:
                raise RecordError(f"{path}: not a version-{fmt} record, missing keys {missing}")
            r = {k: z[k] for k in keys}  # reads (and CRC-checks) every member
    except RecordError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib_error()) as exc:
        raise RecordError(f"{path}: torn or corrupt record ({type(exc).__name__}: {exc})") from None
    for k in ("suite", "instruction"):
        r[k] = str(r[k])
    for k in ("format_version", "task_id", "init_id", "expert_version") + (("noise_seed",) if noisy else ()):
        r[k] = int(r[k])
    if noisy:
        r["noise_scale"] = float(r["noise_scale"])
    T = len(r["actions"])
    if (r["actions"].ndim != 2 or r["actions"].shape[1] != 7 or r["step"].shape != (T,) or r["qpos"].ndim != 2
            or len(r["qpos"]) != T or T == 0 or r["all_actions"].ndim != 2 or r["all_actions"].shape[1] != 7
            or (T and int(r["step"].max()) >= len(r["all_actions"]))
            or r["state0"].ndim != 1 or len(r["state0"]) < 1 + r["qpos"].shape[1]
            or r["body_pos"].ndim != 2 or r["body_pos"].shape[1] != 3
            or r["body_quat"].shape != (len(r["body_pos"]), 4)):
        raise RecordError(f"{path}: inconsistent shapes (actions {r['actions'].shape}, step {r['step'].shape}, "
                          f"qpos {r['qpos'].shape}, all_actions {r['all_actions'].shape})")
    if not np.array_equal(r["all_actions"][r["step"]], r["actions"]):
        raise RecordError(f"{path}: actions differ from all_actions[step]")
    if noisy and r["executed_actions"].shape != r["all_actions"].shape:
        raise RecordError(f"{path}: executed_actions {r['executed_actions'].shape} but all_actions "
                          f"{r['all_actions'].shape}")
    want = parse_path(path, noisy)
    got = (r["suite"], r["task_id"], r["init_id"]) + ((r["noise_seed"],) if noisy else ())
    if got != want:
        raise RecordError(f"{path}: record is {got[0]} task {got[1]} init {got[2]}"
                          + (f" noise seed {got[3]}" if noisy else "") + f" but its path says {want[0]} task "
                          f"{want[1]} init {want[2]}" + (f" noise seed {want[3]}" if noisy else "")
                          + " (file from another suite/task/init?)")
    if manifest_row is not None:
        mrow = (manifest_row["suite"], int(manifest_row["task_id"]), int(manifest_row["init_id"]))
        if noisy:
            mrow += (int(manifest_row.get("noise_seed", -1)),)
        if got != mrow:
            raise RecordError(f"{path}: record is {got} but its manifest row says {mrow}")
        if "frames" in manifest_row and int(manifest_row["frames"]) != T:
            raise RecordError(f"{path}: {T} steps but the manifest row says {manifest_row['frames']}")
    if train:
        try:
            check_train_init(r["init_id"])
        except RecordError as exc:
            raise RecordError(f"{path}: {exc}") from None
    return r


def zlib_error():
    import zlib
    return zlib.error
