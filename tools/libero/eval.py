"""Closed-loop LIBERO evaluation of the Rust policy server (`examples/serve`, docs/serve.md).

  # build the server, then run (resumable: episodes already in --results are skipped)
  cargo build --release --example serve
  MUJOCO_GL=egl nice -n 10 tools/.venv-libero/bin/python tools/libero/eval.py --spawn \
      --decoders plain,strict,relaxed9
  # or against a running server (cargo run --release --example serve -- --port 8000)
  MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/eval.py --server http://127.0.0.1:8000
  # rebuild docs/closed_loop.json and docs/closed_loop.md from the results file alone
  tools/.venv-libero/bin/python tools/libero/eval.py --report-only

Protocol (OpenVLA's experiments/robot/libero/run_libero_eval.py, with the rendering of our training frames):
- Held-out initial states only: init ids 0-9 of every task (training used 10-49).
- One env per task visit, built as generate.Runner builds it (OffScreenRenderEnv, agentview camera at 224x224,
  hard_reset=False, env.seed(0)). Per episode: np.random seeded with crc32("<seed>/<suite>/<task>/<init>")
  (env.seed) before env.reset(), so every decoder sees the same fixture placement for the same init (OpenVLA
  seeds once per task build, so its placement depends on how many resets came before); the gripper's integrated
  command, which robosuite keeps across env.reset(), set to a fresh env's, so no episode depends on the one
  before it; set_init_state; 10 no-op steps [0,0,0,0,0,0,-1]; then at most the suite's step limit (220 / 280 /
  300 / 520) policy actions.
- The frame the policy sees: generate.Runner.render of the current simulator state (agentview, 224x224, rotated
  180 degrees), the exact rendering of the training and held-out frames. OpenVLA renders at 256 and resizes to
  224 through a JPEG round trip because its training frames (RLDS) went through both; ours went through neither,
  so the frame is sent as rendered (the resize to 224 is the identity).
- The request: json-numpy uint8 [224,224,3] image, task.language, unnorm_key <suite> if the server has it, else
  <suite>_no_noops (OpenVLA's rule), `decoder`, a fresh `episode_id` per episode with `reset: true` on its first
  action, `return_stats: true`.
- The action: normalize_gripper_action(action, binarize=True) ([0,1] -> sign(2g-1)), then invert_gripper_action
  (-1 open / +1 close), then env.step. Success = the env's `done`. An exception inside env.step ends the episode
  as a failure (as OpenVLA's try/except); a server error stops the run (the episode is not recorded, so a rerun
  redoes it).
- Work order: rounds of init ids (init 0 of every task, then init 1, ...; --per-visit K takes K inits per round
  and scene build; --order task runs a task's inits in one build), and every decoder on the same init before the
  next init, so a stopped run has comparable counts per decoder.

Outputs: --results (JSONL, one line per finished episode), --out.json / --out.md (the report), --videos (one
success and one failure GIF per suite, 112x112, every 4th frame).
"""
import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
from generate import IMG, MAX_STEPS, NOOP, NUM_WAIT, SUITES, Runner, append_manifest, log  # noqa: E402

EVAL_INITS = range(0, 10)
SEED = 7  # OpenVLA's run_libero_eval seed
GIF_SIDE, GIF_STRIDE, GIF_MAX_FRAMES = 112, 4, 40
Z95 = 1.959963984540054


# ------------------------------------------------------------------------------------------------------------
# decoders


def parse_decoder(name, drafter_config=None):
    """A decoder name -> (the request's `decoder` field, config fields for the report).

    plain | strict | relaxedR ({"relaxed": R}, the server's drafter and --exempt-gripper setting) |
    relaxedRg (radius R, gripper never relaxed) | relaxedR0-R1-...-R6 (one radius per dimension). The last two
    are sent as {"speculation": {...}} with the server's drafter (from /info)."""
    if name == "plain":
        return "plain", {"decoder": "ar", "policy": None, "r": None, "radius": None, "exempt_dims": []}
    if name == "strict":
        return "strict", {"decoder": "spec", "policy": "strict", "r": None, "radius": None, "exempt_dims": []}
    m = re.fullmatch(r"relaxed(\d+)(g?)", name)
    if m:
        r, g = int(m.group(1)), bool(m.group(2))
        cfg = {"decoder": "spec", "policy": "relaxed", "r": r, "radius": r, "exempt_dims": [6] if g else []}
        if not g:
            return {"relaxed": r}, cfg
        return _speculation({"uniform": r}, [6], drafter_config), cfg
    m = re.fullmatch(r"relaxed(\d+(?:-\d+){6})", name)
    if m:
        radii = [int(x) for x in m.group(1).split("-")]
        cfg = {"decoder": "spec", "policy": "relaxed", "r": max(radii), "radius": radii, "exempt_dims": []}
        return _speculation({"per_dimension": radii}, [], drafter_config), cfg
    raise ValueError(f"unknown decoder {name!r}: expected plain, strict, relaxedR, relaxedRg (gripper exempt) "
                     f"or relaxedR0-R1-R2-R3-R4-R5-R6 (per dimension)")


def _speculation(radius, exempt, drafter_config):
    spec = {"radius": radius, "exempt_dims": exempt}
    if drafter_config is not None:
        spec["drafter"] = drafter_config
    return {"speculation": spec}


# ------------------------------------------------------------------------------------------------------------
# the server


class ServerError(RuntimeError):
    pass


class Client:
    """One keep-alive HTTP connection (standard library only)."""

    def __init__(self, base, timeout=600):
        u = urllib.parse.urlsplit(base)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--server {base!r}: expected http://HOST:PORT")
        self.base, self.host, self.port, self.timeout = base, u.hostname, u.port or 80, timeout
        self.conn = None
        self.retries = 0

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                # a keep-alive connection the server closed: retry once on a new one
                self.close()
                if attempt:
                    raise ServerError(f"{method} {self.base}{path}: {type(exc).__name__}: {exc}") from exc
                self.retries += 1
            except OSError as exc:
                self.close()
                raise ServerError(f"{method} {self.base}{path}: {type(exc).__name__}: {exc}") from exc
        try:
            ans = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ServerError(f"{method} {path}: status {resp.status}, not JSON: {raw[:200]!r}") from exc
        if resp.status != 200:
            err = ans.get("error", {}) if isinstance(ans, dict) else {}
            raise ServerError(f"{method} {path}: status {resp.status} {err.get('kind')}: {err.get('message')}")
        return ans

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def image_field(img):
    """json-numpy encoding of a uint8 HxWx3 array, as OpenVLA's client sends it."""
    import numpy as np
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return {"__numpy__": base64.b64encode(img.tobytes()).decode("ascii"), "dtype": "|u1", "shape": list(img.shape)}


class SpawnedServer:
    """target/release/examples/serve --port 0, its output in a log file; stopped with SIGTERM."""

    def __init__(self, binary, extra_args, log_path, start_timeout=900):
        if not os.path.exists(binary):
            sys.exit(f"eval.py: --spawn: {binary} not found; build it: cargo build --release --example serve")
        cmd = [binary, "--port", "0", *extra_args]
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self.log = open(log_path, "a")
        self.log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        self.log.flush()
        # its own session: a Ctrl-C reaches eval.py only, which then stops the server after the last answer
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, start_new_session=True)
        lines = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self.log.write(line)
                self.log.flush()
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.time() + start_timeout
        self.url = None
        while self.url is None:
            try:
                line = lines.get(timeout=max(deadline - time.time(), 0.1))
            except queue.Empty:
                self.stop()
                sys.exit(f"eval.py: the server printed no `listening on` line in {start_timeout} s (see {log_path})")
            if line is None:
                code = self.proc.wait()
                sys.exit(f"eval.py: the server exited with status {code} before listening (see {log_path})")
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/")
        log(f"spawned server pid {self.proc.pid} at {self.url} (log {log_path})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------------------------
# episodes


def episode_seed(seed, suite, task_id, init_id):
    return zlib.crc32(f"{seed}/{suite}/{task_id}/{init_id}".encode()) & 0x7FFFFFFF


def normalize_gripper_action(action, binarize=True):
    """OpenVLA robot_utils: gripper [0,1] -> [-1,+1], binarized with np.sign."""
    import numpy as np
    action[..., -1] = 2 * (action[..., -1] - 0.0) / (1.0 - 0.0) - 1
    if binarize:
        action[..., -1] = np.sign(action[..., -1])
    return action


def invert_gripper_action(action):
    """OpenVLA robot_utils: the dataloader's gripper (0 close, 1 open) back to LIBERO's (-1 open, +1 close)."""
    action[..., -1] = action[..., -1] * -1.0
    return action


def reset_gripper_command(robot):
    """robosuite's gripper integrates its command (`current_action += speed * sign(action)`) and env.reset()
    does not reset it, so an episode's warm-up and first steps depend on how the previous episode ended (measured:
    the state after the 10 no-op steps differs between the first episode after a scene build and later ones). Set
    it to the value of a freshly built env, so every episode starts as OpenVLA's first episode of a task does,
    whatever ran before."""
    import numpy as np
    g = robot.gripper
    g.current_action = np.zeros(g.dof)


def sha1(*arrays):
    h = hashlib.sha1()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def pack_tokens(tokens):
    import numpy as np
    a = np.asarray(tokens, dtype="<u2").reshape(-1)
    return base64.b64encode(zlib.compress(a.tobytes(), 9)).decode("ascii")


def unpack_tokens(s, dims=7):
    import numpy as np
    if not s:
        return np.zeros((0, dims), dtype=np.int64)
    a = np.frombuffer(zlib.decompress(base64.b64decode(s)), dtype="<u2").astype(np.int64)
    return a.reshape(-1, dims)


STAT_KEYS = ("calls", "action_tokens", "tokens", "verifier_passes", "drafted_tokens", "spec_cycles",
             "spec_cycle_tokens", "accept_length_sum", "accept_length_calls", "relaxed_tokens", "relaxed_bin_distance",
             "non_action_tokens", "vision_ms", "prefill_ms", "draft_ms", "verify_ms", "commit_ms", "decode_ms",
             "policy_ms", "queue_ms", "parse_ms", "server_ms", "round_trip_ms", "encode_ms", "restarts")


def add_stats(acc, st, episode, first, rtt_ms, encode_ms):
    acc["calls"] += 1
    acc["action_tokens"] += len(st.get("origins") or [])
    tpp, dpp = st.get("tokens_per_pass") or [], st.get("drafts_per_pass") or []
    acc["tokens"] += sum(tpp)
    acc["verifier_passes"] += st.get("verifier_passes", 0)
    acc["drafted_tokens"] += st.get("drafted_tokens", 0)
    for t, d in zip(tpp, dpp):
        if d > 0:
            acc["spec_cycles"] += 1
            acc["spec_cycle_tokens"] += t
    if st.get("accept_length") is not None:
        acc["accept_length_sum"] += st["accept_length"]
        acc["accept_length_calls"] += 1
    for o in st.get("origins") or []:
        if isinstance(o, dict) and "relaxed" in o:
            acc["relaxed_tokens"] += 1
            acc["relaxed_bin_distance"] += o["relaxed"].get("bin_distance", 0)
    acc["non_action_tokens"] += len(st.get("non_action_positions") or [])
    tm = st.get("times_ms") or {}
    for k in ("vision", "prefill", "draft", "verify", "commit", "decode"):
        acc[f"{k}_ms"] += tm.get(k, 0.0)
    for k in ("policy_ms", "queue_ms", "parse_ms", "server_ms"):
        acc[k] += st.get(k, 0.0)
    acc["round_trip_ms"] += rtt_ms
    acc["encode_ms"] += encode_ms
    if episode is not None and episode.get("fresh") and not first:
        acc["restarts"] += 1  # the server lost this episode's history (eviction, other settings): reported


def run_episode(runner, client, suite, task_id, init_id, dec_name, dec_field, max_steps, unnorm_key, seed,
                want_gif):
    """One episode; returns the results line (without the bookkeeping fields) and the GIF frames."""
    import numpy as np
    from PIL import Image
    env = runner.env
    t_start = time.perf_counter()
    env.seed(episode_seed(seed, suite, task_id, init_id))  # np.random: the fixture placement of env.reset()
    env.reset()
    runner._camera_obs(False)
    for robot in env.env.robots:  # see reset_gripper_command
        reset_gripper_command(robot)
    init_state = runner.init_states[init_id]
    env.set_init_state(init_state)
    m = env.env.sim.model._model
    scene = sha1(m.body_pos, m.body_quat)
    for _ in range(NUM_WAIT):
        env.step(NOOP)
    t_warm = time.perf_counter() - t_start
    eid = f"eval/{suite}/task{task_id:02d}/init{init_id:02d}/{dec_name}/{uuid.uuid4().hex[:12]}"
    acc = dict.fromkeys(STAT_KEYS, 0)
    for k in STAT_KEYS:
        if k.endswith("_ms") or k == "accept_length_sum":
            acc[k] = 0.0
    tokens, raw_actions, actions, frames = [], [], [], []
    success, error, steps, answer_decoder = False, None, 0, None
    env_s = render_s = client_s = 0.0
    retries0 = client.retries
    for t in range(max_steps):
        t0 = time.perf_counter()
        frame = runner.render([env.get_sim_state()])[0]
        t1 = time.perf_counter()
        render_s += t1 - t0
        if want_gif and t % GIF_STRIDE == 0:
            frames.append(Image.fromarray(frame).resize((GIF_SIDE, GIF_SIDE), Image.LANCZOS))
        body = {"image": image_field(frame), "instruction": runner.instruction, "unnorm_key": unnorm_key,
                "decoder": dec_field, "episode_id": eid, "return_stats": True}
        if t == 0:
            body["reset"] = True
        t2 = time.perf_counter()
        ans = client.request("POST", "/act", body)
        t3 = time.perf_counter()
        client_s += t3 - t1
        if t == 0:
            answer_decoder = ans.get("decoder")
        add_stats(acc, ans.get("stats") or {}, ans.get("episode"), t == 0, (t3 - t2) * 1e3, (t2 - t1) * 1e3)
        tokens.append(ans["tokens"])
        a = np.asarray(ans["action"], dtype=np.float64)
        raw_actions.append(a.copy())
        a = invert_gripper_action(normalize_gripper_action(a, binarize=True))
        actions.append(a)
        t4 = time.perf_counter()
        try:
            _, _, done, _ = env.step(a.tolist())
        except Exception as exc:  # noqa: BLE001 - OpenVLA's loop catches everything and ends the episode
            error = f"{type(exc).__name__}: {exc}"
            env_s += time.perf_counter() - t4
            break
        env_s += time.perf_counter() - t4
        steps += 1
        if done:
            success = True
            break
    if want_gif:
        frame = runner.render([env.get_sim_state()])[0]  # the final state
        frames.append(Image.fromarray(frame).resize((GIF_SIDE, GIF_SIDE), Image.LANCZOS))
    wall = time.perf_counter() - t_start
    A = np.stack(actions) if actions else np.zeros((0, 7))
    R = np.stack(raw_actions) if raw_actions else np.zeros((0, 7))
    rec = {
        "suite": suite, "task_id": task_id, "init_id": init_id, "instruction": runner.instruction,
        "decoder": dec_name, "request_decoder": dec_field, "answer_decoder": answer_decoder,
        "success": bool(success), "steps": steps, "max_steps": max_steps, "error": error,
        "episode_id": eid, "unnorm_key": unnorm_key, "scene_sha1": scene, "init_sha1": sha1(np.asarray(init_state)),
        "tokens_sha1": sha1(np.asarray(tokens, dtype="<u2")), "actions_sha1": sha1(A.astype("<f8")),
        "raw_actions_sha1": sha1(R.astype("<f8")), "tokens_z": pack_tokens(tokens),
        "stats": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in acc.items()},
        "times": {"wall_s": round(wall, 2), "warmup_s": round(t_warm, 2), "render_s": round(render_s, 2),
                  "client_s": round(client_s, 2), "env_s": round(env_s, 2),
                  "loadavg": round(os.getloadavg()[0], 2)},
        "http_retries": client.retries - retries0,
    }
    return rec, frames


def save_gif(path, frames):
    """One 64-colour palette for all frames (from the first, middle and last), no dithering: ~2 KB a frame
    (per-frame palettes: ~9 KB)."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stride = max(1, math.ceil(len(frames) / GIF_MAX_FRAMES))
    frames = frames[:-1:stride] + [frames[-1]] if stride > 1 else frames
    keys = [frames[0], frames[len(frames) // 2], frames[-1]]
    mosaic = Image.new("RGB", (GIF_SIDE * len(keys), GIF_SIDE))
    for i, f in enumerate(keys):
        mosaic.paste(f, (GIF_SIDE * i, 0))
    pal = mosaic.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    frames = [f.quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    tmp = path + f".tmp{os.getpid()}"
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0, optimize=True,
                   duration=50 * GIF_STRIDE * stride)  # real time at LIBERO's 20 Hz control
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------------
# results file


def load_results(path):
    rows = {}
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
                rows[(r["suite"], r["task_id"], r["init_id"], r["decoder"])] = r
    return rows


def parse_ints(spec, what):
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
            out += list(range(lo, hi + 1))
        else:
            out.append(int(part))
    if not out:
        raise SystemExit(f"eval.py: {what} {spec!r} names nothing")
    return out


# ------------------------------------------------------------------------------------------------------------
# the report


def wilson(k, n, z=Z95):
    if n == 0:
        return [None, None]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def _sum(rows, key):
    return sum(r["stats"].get(key, 0) for r in rows)


def _per(num, den, nd=3):
    return round(num / den, nd) if den else None


def config_summary(name, rows, cfg):
    n = len(rows)
    k = sum(r["success"] for r in rows)
    calls = _sum(rows, "calls")
    spec_cycles = _sum(rows, "spec_cycles")
    if spec_cycles:
        accept = _sum(rows, "spec_cycle_tokens") / spec_cycles
    else:
        accept = _per(_sum(rows, "tokens"), _sum(rows, "verifier_passes"), 6)
    steps = [r["steps"] for r in rows]
    ok_steps = [r["steps"] for r in rows if r["success"]]
    wall = sum(r["times"]["wall_s"] for r in rows)
    return {
        "name": name, **cfg, "episodes": n, "successes": k, "success_rate": _per(k, n, 4), "wilson95": wilson(k, n),
        "accept_len": round(accept, 3) if accept is not None else None,
        "accept_len_mean_per_call": _per(_sum(rows, "accept_length_sum"), _sum(rows, "accept_length_calls")),
        "actions": calls, "verifier_passes_per_action": _per(_sum(rows, "verifier_passes"), calls),
        "drafted_tokens_per_action": _per(_sum(rows, "drafted_tokens"), calls),
        "relaxed_token_fraction": _per(_sum(rows, "relaxed_tokens"), _sum(rows, "action_tokens"), 4),
        "mean_relaxed_bin_distance": _per(_sum(rows, "relaxed_bin_distance"), _sum(rows, "relaxed_tokens")),
        "non_action_tokens": _sum(rows, "non_action_tokens"),
        "decode_ms_per_action": _per(_sum(rows, "decode_ms"), calls),
        "policy_ms_per_action": _per(_sum(rows, "policy_ms"), calls),
        "server_ms_per_action": _per(_sum(rows, "server_ms"), calls),
        "round_trip_ms_per_action": _per(_sum(rows, "round_trip_ms"), calls),
        "decode_speedup": None, "policy_speedup": None,
        "mean_steps": _per(sum(steps), n, 1), "mean_steps_success": _per(sum(ok_steps), len(ok_steps), 1),
        "episode_errors": sum(1 for r in rows if r.get("error")),
        "history_restarts": _sum(rows, "restarts"),
        "wall_s": round(wall, 1),
    }


def compare_to_plain(rows, name):
    """Exact comparison of a strict decoder's episodes with plain's on the same (suite, task, init)."""
    pairs, diffs = 0, []
    for key, r in sorted(rows.items()):
        if key[3] != name:
            continue
        p = rows.get((key[0], key[1], key[2], "plain"))
        if p is None:
            continue
        pairs += 1
        same = (p["tokens_sha1"] == r["tokens_sha1"] and p["actions_sha1"] == r["actions_sha1"]
                and p["success"] == r["success"] and p["steps"] == r["steps"])
        if same:
            continue
        tp, tr = unpack_tokens(p["tokens_z"]), unpack_tokens(r["tokens_z"])
        n = min(len(tp), len(tr))
        first = next((i for i in range(n) if (tp[i] != tr[i]).any()), None)
        d = {"suite": key[0], "task_id": key[1], "init_id": key[2], "first_differing_step": first,
             "plain": {"success": p["success"], "steps": p["steps"]},
             name: {"success": r["success"], "steps": r["steps"]},
             "same_scene": p["scene_sha1"] == r["scene_sha1"] and p["init_sha1"] == r["init_sha1"]}
        if first is not None:
            d["plain_tokens"] = tp[first].tolist()
            d[f"{name}_tokens"] = tr[first].tolist()
        elif len(tp) != len(tr):
            d["note"] = f"equal tokens over the common {n} steps; lengths {len(tp)} vs {len(tr)}"
        else:
            d["note"] = "equal tokens, different executed actions or outcome"
        diffs.append(d)
    return {"decoder": name, "compared": pairs, "identical": pairs - len(diffs), "differences": diffs}


def build_report(rows, media, protocol_extra=None):
    names = []
    for r in rows.values():
        if r["decoder"] not in names:
            names.append(r["decoder"])
    order = {"plain": 0, "strict": 1}
    names.sort(key=lambda s: (order.get(s, 2), s))
    configs = []
    for name in names:
        rs = [r for r in rows.values() if r["decoder"] == name]
        _, cfg = parse_decoder(name)
        configs.append(config_summary(name, rs, cfg))
    plain = next((c for c in configs if c["name"] == "plain"), None)
    for c in configs:
        if plain and plain["decode_ms_per_action"] and c["decode_ms_per_action"]:
            c["decode_speedup"] = round(plain["decode_ms_per_action"] / c["decode_ms_per_action"], 3)
        if plain and plain["policy_ms_per_action"] and c["policy_ms_per_action"]:
            c["policy_speedup"] = round(plain["policy_ms_per_action"] / c["policy_ms_per_action"], 3)
    per_task = []
    for suite in SUITES:
        for task_id in range(10):
            for name in names:
                rs = [r for (s, t, _, d), r in rows.items() if s == suite and t == task_id and d == name]
                if not rs:
                    continue
                k = sum(r["success"] for r in rs)
                per_task.append({"suite": suite, "task_id": task_id, "instruction": rs[0]["instruction"],
                                 "decoder": name, "episodes": len(rs), "successes": k,
                                 "success_rate": _per(k, len(rs), 4),
                                 "mean_steps": _per(sum(r["steps"] for r in rs), len(rs), 1),
                                 "inits": sorted(r["init_id"] for r in rs)})
    per_suite = []
    for suite in SUITES:
        for name in names:
            rs = [r for (s, _, _, d), r in rows.items() if s == suite and d == name]
            if rs:
                k = sum(r["success"] for r in rs)
                per_suite.append({"suite": suite, "decoder": name, "episodes": len(rs), "successes": k,
                                  "success_rate": _per(k, len(rs), 4), "wilson95": wilson(k, len(rs))})
    strict_checks = [compare_to_plain(rows, c["name"]) for c in configs
                     if c["policy"] == "strict" and plain is not None]
    any_row = next(iter(rows.values()), None)
    all_rows = list(rows.values())
    env_steps = sum(r["steps"] + NUM_WAIT for r in all_rows)
    wall = sum(r["times"]["wall_s"] for r in all_rows)
    maxs = sorted({r["max_steps"] for r in all_rows})
    throughput = {
        "episodes": len(all_rows), "env_steps_incl_warmup": env_steps, "episode_wall_s_sum": round(wall, 1),
        "env_steps_per_s": _per(env_steps, wall, 2), "s_per_episode": _per(wall, len(all_rows), 1),
        "s_per_policy_step": _per(wall - sum(r["times"]["warmup_s"] for r in all_rows),
                                  sum(r["steps"] for r in all_rows) or None, 3),
        "render_s_per_step": _per(sum(r["times"]["render_s"] for r in all_rows), sum(r["steps"] for r in all_rows)),
        "client_s_per_step": _per(sum(r["times"]["client_s"] for r in all_rows), sum(r["steps"] for r in all_rows)),
        "physics_s_per_step": _per(sum(r["times"]["env_s"] for r in all_rows), sum(r["steps"] for r in all_rows)),
        "mean_loadavg": _per(sum(r["times"].get("loadavg", 0) for r in all_rows), len(all_rows), 2),
    }
    finished = sorted(r.get("finished", "") for r in all_rows)
    protocol = {
        "source": "OpenVLA experiments/robot/libero/run_libero_eval.py, rendering as generate.Runner.render",
        "inits": "held-out init ids 0-9 only (training used 10-49)",
        "inits_run": sorted({r["init_id"] for r in all_rows}),
        "num_steps_wait": NUM_WAIT, "dummy_action": NOOP, "max_steps": MAX_STEPS,
        "max_steps_run": maxs, "max_steps_scale": sorted({r.get("max_steps_scale", 1.0) for r in all_rows}),
        "seed": sorted({r.get("seed", SEED) for r in all_rows}),
        "env": "OffScreenRenderEnv(agentview, 224x224, hard_reset=False), env.seed(0) at build; "
               "np.random seeded with crc32('<seed>/<suite>/<task>/<init>') before each env.reset(), the gripper's "
               "integrated command zeroed after it (as in a freshly built env)",
        "image": "Runner.render of the current state: agentview 224x224 rotated 180 degrees (img[::-1, ::-1]); "
                 "no JPEG round trip or resize (the training frames had none)",
        "unnorm_key": "<suite> if the server has it, else <suite>_no_noops",
        "gripper": "normalize_gripper_action(binarize=True) then invert_gripper_action",
        "success": "env.step's done",
    }
    if protocol_extra:
        protocol.update(protocol_extra)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "episodes_finished": [finished[0], finished[-1]] if finished else None,
        "model": (any_row or {}).get("server"),
        "protocol": protocol, "configs": configs, "per_suite": per_suite, "per_task": per_task,
        "strict_equals_plain": strict_checks, "throughput": throughput, "media": media,
    }


def _fmt(x, nd=1, pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.{nd}f}%" if pct else f"{x:.{nd}f}"


def write_markdown(rep, path, media_rel):
    L = []
    smoke = any(s != 1.0 for s in rep["protocol"]["max_steps_scale"])
    L.append("# Closed-loop LIBERO evaluation of the policy server")
    L.append("")
    if smoke:
        L.append(f"**Smoke test: step limits scaled by {rep['protocol']['max_steps_scale']}; not a benchmark "
                 f"result.**")
        L.append("")
    m = rep["model"] or {}
    L.append(f"Written by `tools/libero/eval.py` on {rep['date']} from {rep['throughput']['episodes']} episodes "
             f"(finished {rep['episodes_finished'][0] if rep['episodes_finished'] else '-'} to "
             f"{rep['episodes_finished'][1] if rep['episodes_finished'] else '-'}). Server: model "
             f"`{m.get('model')}`, draft head `{m.get('draft_head')}`, drafter `{m.get('drafter')}`, device "
             f"`{m.get('device')}`, dtype `{m.get('dtype')}`, version {m.get('version')}.")
    L.append("")
    p = rep["protocol"]
    L.append(f"Protocol (OpenVLA's `run_libero_eval.py`): held-out init ids {p['inits_run']} (training used "
             f"10-49), {p['num_steps_wait']} no-op steps `{p['dummy_action']}`, step limits {p['max_steps_run']} "
             f"(spatial 220, object 280, goal 300, libero_10 520 at scale 1), seed {p['seed']}; frame: "
             f"{p['image']}; gripper: {p['gripper']}; success = {p['success']}. Every decoder runs the same "
             f"initial state and fixture placement ({p['env']}).")
    L.append("")
    L.append("## Per decoder")
    L.append("")
    L.append("| decoder | episodes | successes | success rate (95% Wilson) | mean length | accept length | "
             "decode speed-up | decode ms/action | policy ms/action | server ms/action | round trip ms/action |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in rep["configs"]:
        lo, hi = c["wilson95"]
        L.append(f"| {c['name']} | {c['episodes']} | {c['successes']} | {_fmt(c['success_rate'], 1, True)} "
                 f"({_fmt(lo, 1, True)}-{_fmt(hi, 1, True)}) | {_fmt(c['mean_steps'])} | "
                 f"{_fmt(c['accept_len'], 2)} | {_fmt(c['decode_speedup'], 2)}x | "
                 f"{_fmt(c['decode_ms_per_action'])} | {_fmt(c['policy_ms_per_action'])} | "
                 f"{_fmt(c['server_ms_per_action'])} | {_fmt(c['round_trip_ms_per_action'])} |")
    L.append("")
    L.append("Accept length: tokens gained per draft-verify cycle, pooled over all actions (1 for plain). Decode "
             "speed-up: plain's mean decode time per action (the server's `times_ms.decode`: draft + verify + "
             "commit) over this decoder's, from this run. Policy ms: the whole `predict_action` (vision, prefill, "
             "decode); server ms: body received to answer built; round trip: the client's HTTP request to parsed "
             "answer. Times depend on the machine's load (mean load average over the episodes: "
             f"{rep['throughput']['mean_loadavg']}).")
    errs = [c for c in rep["configs"] if c["episode_errors"] or c["history_restarts"] or c["non_action_tokens"]]
    for c in errs:
        L.append(f"- {c['name']}: {c['episode_errors']} episodes ended by an env exception, "
                 f"{c['history_restarts']} actions where the server restarted the episode's history, "
                 f"{c['non_action_tokens']} non-action tokens.")
    L.append("")
    L.append("## Strict equals plain")
    L.append("")
    if not rep["strict_equals_plain"]:
        L.append("Not checked: the run has no plain and strict episodes on the same initial states.")
    for chk in rep["strict_equals_plain"]:
        if chk["compared"] == 0:
            L.append(f"`{chk['decoder']}`: no (suite, task, init) ran with both plain and {chk['decoder']}.")
        elif not chk["differences"]:
            L.append(f"`{chk['decoder']}` vs `plain`: identical on {chk['identical']}/{chk['compared']} episodes "
                     f"(every action token, every executed action, the outcome and the length).")
        else:
            L.append(f"`{chk['decoder']}` vs `plain`: identical on {chk['identical']}/{chk['compared']} episodes; "
                     f"{len(chk['differences'])} differ:")
            L.append("")
            L.append("| suite | task | init | first differing step | plain (success, steps) | "
                     f"{chk['decoder']} (success, steps) | same scene | tokens there (plain / {chk['decoder']}) |")
            L.append("|---|---|---|---|---|---|---|---|")
            for d in chk["differences"]:
                toks = (f"{d.get('plain_tokens')} / {d.get(chk['decoder'] + '_tokens')}"
                        if d["first_differing_step"] is not None else d.get("note", ""))
                L.append(f"| {d['suite']} | {d['task_id']} | {d['init_id']} | {d['first_differing_step']} | "
                         f"{d['plain']['success']}, {d['plain']['steps']} | {d[chk['decoder']]['success']}, "
                         f"{d[chk['decoder']]['steps']} | {d['same_scene']} | {toks} |")
        L.append("")
    L.append("## Per suite")
    L.append("")
    names = [c["name"] for c in rep["configs"]]
    L.append("| suite | " + " | ".join(f"{n} successes/episodes (95% Wilson)" for n in names) + " |")
    L.append("|---|" + "---|" * len(names))
    for suite in SUITES:
        cells = []
        for n in names:
            s = next((x for x in rep["per_suite"] if x["suite"] == suite and x["decoder"] == n), None)
            cells.append("-" if s is None else f"{s['successes']}/{s['episodes']} "
                         f"({_fmt(s['wilson95'][0], 0, True)}-{_fmt(s['wilson95'][1], 0, True)})")
        if any(c != "-" for c in cells):
            L.append(f"| {suite} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("## Per task")
    L.append("")
    L.append("Successes/episodes and mean episode length (policy steps; a failure runs to the step limit).")
    L.append("")
    L.append("| suite | task | instruction | " + " | ".join(f"{n}" for n in names) + " |")
    L.append("|---|---|---|" + "---|" * len(names))
    for suite in SUITES:
        for task_id in range(10):
            ts = {x["decoder"]: x for x in rep["per_task"] if x["suite"] == suite and x["task_id"] == task_id}
            if not ts:
                continue
            instr = next(iter(ts.values()))["instruction"]
            cells = [("-" if n not in ts else f"{ts[n]['successes']}/{ts[n]['episodes']}, "
                      f"{_fmt(ts[n]['mean_steps'])}") for n in names]
            L.append(f"| {suite} | {task_id} | {instr} | " + " | ".join(cells) + " |")
    L.append("")
    if rep["media"]:
        L.append("## Episodes (GIFs)")
        L.append("")
        L.append(f"The frames the policy saw, {GIF_SIDE}x{GIF_SIDE}, every {GIF_STRIDE}th step (fewer for long "
                 f"episodes), the final state last: the first success and the first failure of each suite, "
                 f"whichever decoder ran it.")
        L.append("")
        for item in rep["media"]:
            rel = os.path.join(media_rel, item["file"])
            L.append(f"- {item['suite']} {'success' if item['success'] else 'failure'}: task {item['task_id']} "
                     f"init {item['init_id']}, {item['decoder']}, {item['steps']} steps, \"{item['instruction']}\": "
                     f"![]({rel})")
        L.append("")
    t = rep["throughput"]
    L.append("## Throughput")
    L.append("")
    L.append(f"{t['episodes']} episodes, {t['env_steps_incl_warmup']} env steps (warm-up included) in "
             f"{t['episode_wall_s_sum']} s of episode time (scene builds excluded): {t['env_steps_per_s']} env "
             f"steps/s, {t['s_per_episode']} s per episode, {t['s_per_policy_step']} s per policy step (rendering "
             f"{t['render_s_per_step']} s, the server request {t['client_s_per_step']} s, physics "
             f"{t['physics_s_per_step']} s).")
    L.append("")
    L.append("Reproduce: `MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/eval.py --spawn ...` (see "
             "tools/libero/README.md); `--report-only` rebuilds this file from the results JSONL.")
    L.append("")
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(L))
    os.replace(tmp, path)


def load_media(videos_dir):
    path = os.path.join(videos_dir, "index.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def write_report(args, rows):
    if not rows:
        log("no finished episodes: no report written")
        return None
    eids = {r["episode_id"] for r in rows.values()}
    media = [m for m in (load_media(args.videos) if args.videos else []) if m.get("episode_id") in eids]
    rep = build_report(rows, media)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as f:
        json.dump(rep, f, indent=1)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    media_rel = os.path.relpath(os.path.abspath(args.videos), os.path.dirname(os.path.abspath(args.out))) \
        if args.videos else ""
    write_markdown(rep, args.out + ".md", media_rel)
    log(f"wrote {args.out}.json and {args.out}.md ({len(rows)} episodes)")
    return rep


# ------------------------------------------------------------------------------------------------------------
# main


def save_media(videos, media, rec, frames):
    """The episode's GIF in its suite's success or failure slot, listed in videos/index.json."""
    name = f"{rec['suite']}_{'success' if rec['success'] else 'failure'}.gif"
    save_gif(os.path.join(videos, name), frames)
    media[:] = [m for m in media if m["file"] != name]
    media.append({k: rec[k] for k in ("suite", "success", "task_id", "init_id", "decoder", "steps", "instruction",
                                      "episode_id")} | {"file": name})
    media.sort(key=lambda m: (SUITES.index(m["suite"]), not m["success"]))
    with open(os.path.join(videos, "index.json"), "w") as f:
        json.dump(media, f, indent=1)
    return name


class Progress:
    """Counts for the progress lines; ETA = seconds per step of step limit so far (failures run to the limit)
    times the step limits of the episodes left, plus the scene builds left."""

    def __init__(self, visits, decoders, done, scale):
        self.visits, self.decoders, self.done, self.scale = visits, decoders, done, scale
        self.todo = self._left()
        self.n_run, self.steps, self.budget, self.n_builds = 0, 0, 0, 0
        self.t0, self.wall, self.build_s = time.time(), 0.0, 0.0

    def _limit(self, suite):
        return max(1, int(round(MAX_STEPS[suite] * self.scale)))

    def _left(self):
        return {(s, t, i, d) for s, t, ii in self.visits for i in ii for d in self.decoders
                if (s, t, i, d) not in self.done}

    def built(self, seconds):
        self.build_s += seconds
        self.n_builds += 1

    def line(self, rec):
        self.n_run += 1
        self.steps += rec["steps"] + NUM_WAIT
        self.wall += rec["times"]["wall_s"]
        self.budget += rec["max_steps"]
        left = self._left()
        builds_left = len({(s, t, tuple(ii)) for s, t, ii in self.visits
                           if any((s, t, i, d) in left for i in ii for d in self.decoders)})
        eta = (sum(self._limit(s) for s, _, _, _ in left) * self.wall / max(self.budget, 1)
               + builds_left * self.build_s / max(self.n_builds, 1))
        rs = [r for r in self.done.values() if r["decoder"] == rec["decoder"]]
        st, tm = rec["stats"], rec["times"]
        return (f"[{self.n_run}/{len(self.todo)}] {rec['suite']} task{rec['task_id']:02d} init{rec['init_id']:02d} "
                f"{rec['decoder']}: success={rec['success']} steps={rec['steps']}/{rec['max_steps']} "
                f"{tm['wall_s']:.0f}s (render {tm['render_s']:.0f}s, server {tm['client_s']:.0f}s, physics "
                f"{tm['env_s']:.0f}s) accept={_per(st['spec_cycle_tokens'], st['spec_cycles'], 2)} | "
                f"{rec['decoder']} {sum(r['success'] for r in rs)}/{len(rs)} | "
                f"{self.steps / max(self.wall, 1e-9):.1f} env steps/s | elapsed {(time.time() - self.t0) / 60:.1f} "
                f"min, ETA {eta / 3600:.1f} h")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="", help="a running server, http://HOST:PORT")
    ap.add_argument("--spawn", action="store_true", help="start --binary --port 0 (+ --serve-args) and stop it "
                    "at the end")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "examples", "serve"))
    ap.add_argument("--serve-args", default="", help="extra arguments of the spawned server, e.g. "
                    "'--device cuda --threads 2'")
    ap.add_argument("--server-log", default=os.path.join(HERE, "out", "closed_loop_server.log"))
    ap.add_argument("--decoders", default="plain,strict,relaxed9",
                    help="comma-separated: plain, strict, relaxedR, relaxedRg (gripper exempt), "
                         "relaxedR0-R1-R2-R3-R4-R5-R6 (per dimension)")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--tasks", default="0-9", help="task ids, e.g. 0-9 or 0,3,5")
    ap.add_argument("--inits", default="0-9", help="held-out init ids (0-9), e.g. 0-9 or 0,1")
    ap.add_argument("--episodes-per-task", type=int, default=0, help="run only the first N of --inits (0 = all)")
    ap.add_argument("--order", choices=["init", "task"], default="init",
                    help="init: rounds of --per-visit init ids over every task (a stopped run covers every task); "
                         "task: all of a task's inits in one scene build, suite after suite")
    ap.add_argument("--per-visit", type=int, default=1, help="--order init: init ids per round (scene build)")
    ap.add_argument("--shard", default="0/1", help="i/n: this worker runs every n-th scene visit (parallel workers "
                    "against one server, sharing --results)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--max-steps-scale", type=float, default=1.0, help="scale the suites' step limits (smoke "
                    "tests); results of another scale are refused in the same --results file")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "closed_loop"),
                    help="writes OUT.json and OUT.md")
    ap.add_argument("--results", default=os.path.join(HERE, "out", "closed_loop.jsonl"))
    ap.add_argument("--videos", default=os.path.join(ROOT, "docs", "closed_loop_media"),
                    help="GIF folder ('' = none)")
    ap.add_argument("--report-only", action="store_true", help="rebuild --out from --results and stop")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    if args.out.endswith(".json") or args.out.endswith(".md"):
        args.out = os.path.splitext(args.out)[0]

    if args.report_only:
        write_report(args, load_results(args.results))
        return

    decoders = [d for d in args.decoders.split(",") if d]
    for d in decoders:
        try:
            parse_decoder(d)
        except ValueError as exc:
            sys.exit(f"eval.py: --decoders: {exc}")
    if len(set(decoders)) != len(decoders):
        sys.exit("eval.py: --decoders: a decoder is named twice")
    suites = [s for s in args.suites.split(",") if s]
    for s in suites:
        if s not in MAX_STEPS:
            sys.exit(f"eval.py: --suites: unknown suite {s!r} (known: {', '.join(SUITES)})")
    tasks = parse_ints(args.tasks, "--tasks")
    inits = parse_ints(args.inits, "--inits")
    bad = [i for i in inits if i not in EVAL_INITS]
    if bad:
        sys.exit(f"eval.py: --inits: {bad} are not held-out init ids: evaluation uses init ids 0-9 only "
                 f"(10-49 are training inits)")
    if args.episodes_per_task:
        inits = inits[:args.episodes_per_task]
    if bool(args.server) == bool(args.spawn):
        sys.exit("eval.py: give --server URL or --spawn (one of them)")
    problems = check_env.check(os.path.dirname(os.path.abspath(args.results)))
    if problems:
        sys.exit(check_env.report(problems))

    import numpy as np
    random.seed(args.seed)
    np.random.seed(args.seed)

    done = load_results(args.results)
    for key, r in done.items():
        if r.get("max_steps_scale", 1.0) != args.max_steps_scale or r.get("seed", SEED) != args.seed:
            sys.exit(f"eval.py: {args.results} holds episodes run with --max-steps-scale "
                     f"{r.get('max_steps_scale', 1.0)} --seed {r.get('seed', SEED)} (e.g. {key}); this run asks "
                     f"for {args.max_steps_scale} / {args.seed}: use another --results file")
    # GIFs of episodes that are not in the results file (a smoke test's, say) are replaced
    eids = {r["episode_id"] for r in done.values()}
    media = [m for m in (load_media(args.videos) if args.videos else []) if m.get("episode_id") in eids]
    have_media = {(m["suite"], m["success"]) for m in media}

    spawned, status = None, 0

    def on_term(signum, frame):  # SIGTERM: stop cleanly, stopping the spawned server too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.spawn:
            spawned = SpawnedServer(args.binary, args.serve_args.split(), args.server_log)
            url = spawned.url
        else:
            url = args.server.rstrip("/")
        client = Client(url)
        client.request("GET", "/health")
        info = client.request("GET", "/info")
        server = {k: info.get(k) for k in ("model", "draft_head", "drafter", "device", "dtype", "version",
                                          "default_decoder")}
        for key, r in done.items():
            old = r.get("server") or {}
            if (old.get("model"), old.get("draft_head"), old.get("drafter")) != (
                    server["model"], server["draft_head"], server["drafter"]):
                sys.exit(f"eval.py: {args.results} holds episodes of another server setup ({old}; now {server}): "
                         f"use another --results file")
        keys = info.get("unnorm_keys") or []
        unnorm = {}
        for s in suites:
            if s in keys:
                unnorm[s] = s
            elif f"{s}_no_noops" in keys:
                unnorm[s] = f"{s}_no_noops"
            else:
                sys.exit(f"eval.py: the server has no unnorm key for {s} (has {keys})")
        fields = {d: parse_decoder(d, info.get("drafter_config"))[0] for d in decoders}
        log(f"server {url}: model {server['model']}, draft head {server['draft_head']}, drafter "
            f"{server['drafter']}, device {server['device']}, dtype {server['dtype']}")
        # each decoder once on a grey frame (no episode): a bad decoder fails here, not hours in
        probe = np.full((IMG, IMG, 3), 127, dtype=np.uint8)
        for d in decoders:
            client.request("POST", "/act", {"image": image_field(probe), "instruction": "pick up the bowl",
                                            "unnorm_key": unnorm[suites[0]], "decoder": fields[d]})

        if args.order == "init":
            k = max(1, args.per_visit)
            visits = [(s, t, inits[j:j + k]) for j in range(0, len(inits), k) for t in tasks for s in suites]
        else:
            visits = [(s, t, inits) for s in suites for t in tasks]
        shard_i, shard_n = (int(x) for x in args.shard.split("/"))
        visits = [v for j, v in enumerate(visits) if j % shard_n == shard_i]
        todo_total = sum(1 for s, t, ii in visits for i in ii for d in decoders if (s, t, i, d) not in done)
        log(f"resume: {len(done)} episodes in {args.results}; {todo_total} to run "
            f"({len(suites)} suites x {len(tasks)} tasks x {len(inits)} inits x {len(decoders)} decoders)")
        prog = Progress(visits, decoders, done, args.max_steps_scale)
        for suite, task_id, vinits in visits:
            todo = [(i, d) for i in vinits for d in decoders if (suite, task_id, i, d) not in done]
            if not todo:
                continue
            tb = time.time()
            try:
                runner = Runner(suite, task_id)
            except Exception as exc:  # noqa: BLE001
                log(f"ERROR building {suite} task{task_id}: {type(exc).__name__}: {exc} -- skipped")
                continue
            prog.built(time.time() - tb)
            max_steps = max(1, int(round(MAX_STEPS[suite] * args.max_steps_scale)))
            try:
                for init_id, dec in todo:
                    if init_id >= len(runner.init_states):
                        log(f"{suite} task{task_id} has {len(runner.init_states)} init states: init {init_id} "
                            f"skipped")
                        continue
                    want = bool(args.videos) and not ({(suite, True), (suite, False)} <= have_media)
                    rec, frames = run_episode(runner, client, suite, task_id, init_id, dec, fields[dec], max_steps,
                                              unnorm[suite], args.seed, want)
                    rec.update(seed=args.seed, max_steps_scale=args.max_steps_scale, server=server,
                               finished=time.strftime("%Y-%m-%dT%H:%M:%S"), video=None)
                    if want and (suite, rec["success"]) not in have_media:
                        rec["video"] = save_media(args.videos, media, rec, frames)
                        have_media.add((suite, rec["success"]))
                    append_manifest(args.results, rec)
                    done[(suite, task_id, init_id, dec)] = rec
                    log(prog.line(rec))
            finally:
                runner.close()
        log(f"finished: {prog.n_run} episodes run in {(time.time() - prog.t0) / 60:.1f} min "
            f"(scene builds {prog.build_s:.0f} s over {prog.n_builds})")
    except KeyboardInterrupt:
        log("interrupted: finished episodes are in the results file; rerun the same command to resume")
    except ServerError as exc:
        log(f"ERROR the server failed: {exc} -- the episode in flight is not recorded; rerun to resume")
        status = 1
    finally:
        if spawned is not None:
            spawned.stop()
            log("spawned server stopped")
    write_report(args, load_results(args.results))
    sys.exit(status)


if __name__ == "__main__":
    main()
