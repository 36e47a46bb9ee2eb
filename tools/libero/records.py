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

load_record() raises RecordError (with the path and the reason) for a torn/truncated file, a wrong format
version, missing keys, inconsistent shapes, suite/task/init that do not match the file's path or its manifest
row, and a training record from an evaluation-only init id (0-9).
"""
import os
import re
import zipfile

RECORD_FORMAT = 2
TRAIN_INITS = range(10, 50)  # init ids 0-9 of every task are evaluation-only
EVAL_INITS = range(0, 10)
KEYS = ("format_version", "suite", "task_id", "init_id", "instruction", "actions", "step", "qpos", "state0",
        "all_actions", "expert_version", "body_pos", "body_quat")
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
_NAME = re.compile(r"^task(\d\d)_init(\d\d)\.npz$")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file and the reason."""


def check_train_init(init_id):
    if int(init_id) not in TRAIN_INITS:
        raise RecordError(f"init id {init_id} is not a training init: training uses init ids "
                          f"{TRAIN_INITS.start}-{TRAIN_INITS.stop - 1}; init ids 0-9 are evaluation-only")


def rel_path(suite, task_id, init_id):
    return f"{suite}/task{int(task_id):02d}_init{int(init_id):02d}.npz"


def parse_path(path):
    """(suite, task_id, init_id) from .../<suite>/taskTT_initII.npz, or RecordError."""
    m = _NAME.match(os.path.basename(path))
    suite = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if not m or suite not in SUITES:
        raise RecordError(f"{path}: not a record path (expected <suite>/taskTT_initII.npz, suite one of "
                          f"{', '.join(SUITES)})")
    return suite, int(m.group(1)), int(m.group(2))


def save_record(path, *, suite, task_id, init_id, instruction, actions, step, qpos, state0, all_actions,
                expert_version, body_pos, body_quat):
    """Atomic write (temp file + rename): a killed writer leaves no torn record under the final name."""
    import numpy as np
    check_train_init(init_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(
            f, format_version=np.array(RECORD_FORMAT, dtype=np.int64), suite=np.array(suite),
            task_id=np.array(task_id, dtype=np.int64), init_id=np.array(init_id, dtype=np.int64),
            instruction=np.array(instruction), actions=np.asarray(actions, dtype=np.float32),
            step=np.asarray(step, dtype=np.int64), qpos=np.asarray(qpos, dtype=np.float64),
            state0=np.asarray(state0, dtype=np.float64), all_actions=np.asarray(all_actions, dtype=np.float32),
            expert_version=np.array(expert_version, dtype=np.int64),
            body_pos=np.asarray(body_pos, dtype=np.float64), body_quat=np.asarray(body_quat, dtype=np.float64))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_record(path, manifest_row=None, train=True):
    """Load and validate a record; returns a dict of numpy arrays / python scalars. Raises RecordError."""
    import numpy as np
    if not os.path.isfile(path):
        raise RecordError(f"{path}: record file missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if "format_version" in z.files and int(z["format_version"]) != RECORD_FORMAT:
                v = int(z["format_version"])
                raise RecordError(f"{path}: record format version {v}, this code reads version {RECORD_FORMAT}"
                                  + (" (version 1 lacks the fixture placement, its frames cannot be re-rendered; "
                                     "regenerate the episode)" if v == 1 else ""))
            if missing:
                raise RecordError(f"{path}: not a version-{RECORD_FORMAT} record, missing keys {missing}")
            r = {k: z[k] for k in KEYS}  # reads (and CRC-checks) every member
    except RecordError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib_error()) as exc:
        raise RecordError(f"{path}: torn or corrupt record ({type(exc).__name__}: {exc})") from None
    for k in ("suite", "instruction"):
        r[k] = str(r[k])
    for k in ("format_version", "task_id", "init_id", "expert_version"):
        r[k] = int(r[k])
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
    want = parse_path(path)
    got = (r["suite"], r["task_id"], r["init_id"])
    if got != want:
        raise RecordError(f"{path}: record is {got[0]} task {got[1]} init {got[2]} but its path says "
                          f"{want[0]} task {want[1]} init {want[2]} (file from another suite/task/init?)")
    if manifest_row is not None:
        mrow = (manifest_row["suite"], int(manifest_row["task_id"]), int(manifest_row["init_id"]))
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
