"""One closed-loop episode under OpenVLA's run_libero_eval protocol (see eval.py's docstring): the per-episode
seed, env reset and warm-up, the gripper post-processing, the loop of server requests and env steps, and the
results line with the server's per-call stats summed."""
import base64
import hashlib
import os
import time
import uuid
import zlib

from generate import NOOP, NUM_WAIT

from .client import image_field
from .media import GIF_SIDE, GIF_STRIDE

SEED = 7  # OpenVLA's run_libero_eval seed


def episode_seed(seed, suite, task_id, init_id, placement=0):
    """np.random's seed before env.reset(), which places the fixtures: one placement per (init, placement index);
    placement 0 is the seed every run before placements existed used."""
    tag = f"{seed}/{suite}/{task_id}/{init_id}" + (f"/p{placement}" if placement else "")
    return zlib.crc32(tag.encode()) & 0x7FFFFFFF


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


def new_stats():
    """An empty accumulator of STAT_KEYS: times and the accept-length sum as floats, counts as ints."""
    return {k: 0.0 if (k.endswith("_ms") or k == "accept_length_sum") else 0 for k in STAT_KEYS}


def rounded_stats(acc):
    """The accumulator as a results line stores it."""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in acc.items()}


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
                want_gif, placement=0, lockstep=(), plain_shadow=False, shadow_exact=()):
    """One episode; returns the results line (without the bookkeeping fields), the GIF frames, and the rows of
    the `lockstep` decoders ((name, field) pairs, closed_loop/lockstep.py) that matched it at every step. With
    `plain_shadow` (a decoder other than plain), plain decoding also answers every frame (closed_loop/shadow.py)
    and the line's `plain_shadow` field holds its statistics, with the `shadow_exact` decoders' ((name, field)
    pairs) comparisons with plain on those frames."""
    import numpy as np
    from .lockstep import LockstepCopy, run_copies
    from .shadow import PLAIN, PlainShadow
    from PIL import Image
    env = runner.env
    t_start = time.perf_counter()
    env.seed(episode_seed(seed, suite, task_id, init_id, placement))  # np.random: env.reset()'s fixture placement
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
    eid = (f"eval/{suite}/task{task_id:02d}/init{init_id:02d}" + (f"p{placement}" if placement else "")
           + f"/{dec_name}/{uuid.uuid4().hex[:12]}")
    copies = [LockstepCopy(name, field, eid.replace(f"/{dec_name}/", f"/{name}/")) for name, field in lockstep]
    shadow = PlainShadow(eid.replace(f"/{dec_name}/", f"/{PLAIN}-shadow/"), shadow_exact) \
        if plain_shadow and dec_name != PLAIN else None
    lockstep_s = 0.0
    acc = new_stats()
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
        # with a plain shadow, plain's call goes first at odd steps (see closed_loop/shadow.py); its time is
        # the shadow's, not the episode's
        called = shadow.call(client, body, t) if shadow is not None and shadow.plain_first(t) else None
        t2b = time.perf_counter()
        ans = client.request("POST", "/act", body)
        t3 = time.perf_counter()
        client_s += (t3 - t1) - (t2b - t2)
        if t == 0:
            answer_decoder = ans.get("decoder")
        add_stats(acc, ans.get("stats") or {}, ans.get("episode"), t == 0, (t3 - t2b) * 1e3, (t2 - t1) * 1e3)
        tokens.append(ans["tokens"])
        a = np.asarray(ans["action"], dtype=np.float64)
        raw_actions.append(a.copy())
        lockstep_s += run_copies(copies, client, body, t, ans["tokens"], a)
        if shadow is not None:
            lockstep_s += shadow.run(client, body, t, ans["tokens"], a, ans.get("stats"), called)
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
    wall = time.perf_counter() - t_start - lockstep_s
    A = np.stack(actions) if actions else np.zeros((0, 7))
    R = np.stack(raw_actions) if raw_actions else np.zeros((0, 7))
    rec = {
        "suite": suite, "task_id": task_id, "init_id": init_id, "placement": placement,
        "instruction": runner.instruction,
        "decoder": dec_name, "request_decoder": dec_field, "answer_decoder": answer_decoder,
        "success": bool(success), "steps": steps, "max_steps": max_steps, "error": error,
        "episode_id": eid, "unnorm_key": unnorm_key, "scene_sha1": scene, "init_sha1": sha1(np.asarray(init_state)),
        "tokens_sha1": sha1(np.asarray(tokens, dtype="<u2")), "actions_sha1": sha1(A.astype("<f8")),
        "raw_actions_sha1": sha1(R.astype("<f8")), "tokens_z": pack_tokens(tokens),
        "stats": rounded_stats(acc),
        "times": {"wall_s": round(wall, 2), "warmup_s": round(t_warm, 2), "render_s": round(render_s, 2),
                  "client_s": round(client_s, 2), "env_s": round(env_s, 2),
                  "loadavg": round(os.getloadavg()[0], 2)},
        "http_retries": client.retries - retries0,
    }
    if shadow is not None:
        rec["plain_shadow"] = shadow.summary()
    rows = [r for r in (c.record(rec, dec_name) for c in copies) if r is not None]
    return rec, frames, rows
