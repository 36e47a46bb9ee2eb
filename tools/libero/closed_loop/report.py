"""The report from the results file: per decoder success rates with 95% Wilson intervals, accept length and
decode speed-up over plain, each decoder's success against plain's (compare.py), per suite and per task tables,
the exact strict-vs-plain comparison, throughput;
written as OUT.json and OUT.md (docs/closed_loop.*)."""
import json
import os
import time

from generate import MAX_STEPS, NOOP, NUM_WAIT, SUITES, log

from .compare import first_token_difference, versus_plain, wilson_exact, write_markdown_section
from .decoders import parse_decoder
from .episode import SEED, unpack_tokens
from .media import GIF_SIDE, GIF_STRIDE, media_of

def wilson(k, n):
    lo, hi = wilson_exact(k, n)
    return [None, None] if lo is None else [round(lo, 4), round(hi, 4)]


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
        **shadow_summary(rows),
    }


def shadow_summary(rows):
    """Plain's shadow (closed_loop/shadow.py) over the rows that have one: plain's decode and policy time on the
    same frames over the decoder's on those rows, and how often plain's tokens and action agree with the
    decoder's."""
    rs = [r for r in rows if r.get("plain_shadow")]
    if not rs:
        return {"shadow_episodes": 0}
    out = shadow_figures(rs)
    # Rows whose calls took turns going first (closed_loop/shadow.py) and rows where the decoder always went
    # first (runs before the alternation; that order favours plain), each on its own.
    turns = [r for r in rs if r["plain_shadow"].get("first_call")]
    fixed = [r for r in rs if not r["plain_shadow"].get("first_call")]
    out["shadow_by_order"] = {}
    if fixed:
        out["shadow_by_order"]["decoder first"] = shadow_figures(fixed)
    if turns:
        alt = shadow_figures(turns)
        first = [r["plain_shadow"]["first_call"] for r in turns]
        plain_first = sum(f["plain"]["plain_decode_ms"] for f in first) / max(sum(f["plain"]["steps"] for f in first), 1)
        dec_first = sum(f["decoder"]["decoder_decode_ms"] for f in first) / max(
            sum(f["decoder"]["steps"] for f in first), 1)
        alt["first_call_decode_speedup"] = _per(plain_first, dec_first)
        out["shadow_by_order"]["taking turns"] = alt
    return out


def shadow_figures(rs):
    """shadow_summary's figures over the rows `rs` (each with a shadow)."""
    sh = [r["plain_shadow"] for r in rs]
    steps = sum(x["steps"] for x in sh)

    def shadow_sum(key):
        return sum(x["stats"].get(key, 0) for x in sh)

    return {
        "shadow_episodes": len(rs), "shadow_steps": steps,
        "shadow_decode_speedup": _per(shadow_sum("decode_ms"), _sum(rs, "decode_ms")),
        "shadow_policy_speedup": _per(shadow_sum("policy_ms"), _sum(rs, "policy_ms")),
        "shadow_plain_decode_ms_per_action": _per(shadow_sum("decode_ms"), shadow_sum("calls")),
        "shadow_decode_ms_per_action": _per(_sum(rs, "decode_ms"), _sum(rs, "calls")),
        "shadow_same_tokens_fraction": _per(sum(x["same_tokens_steps"] for x in sh), steps, 4),
        "shadow_action_l1": _per(sum(x["action_l1_sum"] for x in sh), steps, 5),
        "shadow_exact": exact_summary(sh),
    }


def exact_summary(shadows):
    """Per exact rider (strict): frames compared with plain's answer, those that differed, and its decode speed-up
    over plain on them."""
    out = {}
    for name in sorted({n for x in shadows for n in x.get("exact", {})}):
        pairs = [(x, x["exact"][name]) for x in shadows if name in x.get("exact", {})]
        plain_ms = sum(x["stats"].get("decode_ms", 0) for x, _ in pairs)
        own_ms = sum(e["stats"].get("decode_ms", 0) for _, e in pairs)
        out[name] = {"episodes": len(pairs), "steps": sum(e["steps"] for _, e in pairs),
                     "differing_steps": sum(e["differing_steps"] for _, e in pairs),
                     "episodes_with_differences": sum(1 for _, e in pairs if e["differing_steps"]),
                     "decode_speedup": _per(plain_ms, own_ms),
                     "accept_len": _per(sum(e["stats"].get("spec_cycle_tokens", 0) for _, e in pairs),
                                        sum(e["stats"].get("spec_cycles", 0) for _, e in pairs))}
    return out


def compare_to_plain(rows, name):
    """Exact comparison of a strict decoder's episodes with plain's on the same (suite, task, init)."""
    pairs, diffs = 0, []
    for key, r in sorted(rows.items()):
        if key[-1] != name:
            continue
        p = rows.get(key[:-1] + ("plain",))
        if p is None:
            continue
        pairs += 1
        same = (p["tokens_sha1"] == r["tokens_sha1"] and p["actions_sha1"] == r["actions_sha1"]
                and p["success"] == r["success"] and p["steps"] == r["steps"])
        if same:
            continue
        tp, tr = unpack_tokens(p["tokens_z"]), unpack_tokens(r["tokens_z"])
        n = min(len(tp), len(tr))
        first = first_token_difference(tp, tr)
        d = {"suite": key[0], "task_id": key[1], "init_id": key[2], "placement": key[3], "first_differing_step": first,
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
    lockstep = sum(1 for key, r in rows.items() if key[-1] == name and r.get("lockstep_of") == "plain")
    return {"decoder": name, "compared": pairs, "identical": pairs - len(diffs), "differences": diffs,
            "lockstep": lockstep}


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
                rs = [r for (s, t, _, _, d), r in rows.items() if s == suite and t == task_id and d == name]
                if not rs:
                    continue
                k = sum(r["success"] for r in rs)
                per_task.append({"suite": suite, "task_id": task_id, "instruction": rs[0]["instruction"],
                                 "decoder": name, "episodes": len(rs), "successes": k,
                                 "success_rate": _per(k, len(rs), 4),
                                 "mean_steps": _per(sum(r["steps"] for r in rs), len(rs), 1),
                                 "inits": sorted({r["init_id"] for r in rs}),
                                 "placements": sorted({r.get("placement", 0) for r in rs})})
    per_suite = []
    for suite in SUITES:
        for name in names:
            rs = [r for (s, _, _, _, d), r in rows.items() if s == suite and d == name]
            if rs:
                k = sum(r["success"] for r in rs)
                per_suite.append({"suite": suite, "decoder": name, "episodes": len(rs), "successes": k,
                                  "success_rate": _per(k, len(rs), 4), "wilson95": wilson(k, len(rs))})
    vs_plain = [v for v in (versus_plain(rows, c["name"]) for c in configs if c["name"] != "plain") if v]
    strict_checks = [compare_to_plain(rows, c["name"]) for c in configs
                     if c["policy"] == "strict" and plain is not None]
    # the server of this file's own episodes (a --baseline's plain rows come from another server)
    any_row = next((r for r in rows.values() if not r.get("baseline")), None)
    baselines = sorted({r["baseline"] for r in rows.values() if r.get("baseline")})
    # lockstep rows (closed_loop/lockstep.py) share plain's frames and physics: the simulator's throughput counts
    # the episodes that ran the simulator
    # (a --baseline's episodes ran in another run: not counted here)
    lockstep_rows = [r for r in rows.values() if r.get("lockstep_of") and not r.get("baseline")]
    all_rows = [r for r in rows.values() if not r.get("lockstep_of") and not r.get("baseline")]
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
        "lockstep_episodes": len(lockstep_rows),
        "lockstep_call_s_sum": round(sum(r["times"]["wall_s"] for r in lockstep_rows), 1),
    }
    finished = sorted(r.get("finished", "") for r in rows.values())
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
        "protocol": protocol, "configs": configs, "vs_plain": vs_plain, "per_suite": per_suite, "per_task": per_task,
        "strict_equals_plain": strict_checks, "throughput": throughput, "media": media,
        "baseline": [{"results": b, "decoders": sorted({r["decoder"] for r in rows.values() if r.get("baseline") == b}),
                      "episodes": sum(1 for r in rows.values() if r.get("baseline") == b),
                      "server": next(r["server"] for r in rows.values() if r.get("baseline") == b),
                      "mean_loadavg": _per(sum(r["times"].get("loadavg", 0) for r in rows.values()
                                               if r.get("baseline") == b),
                                           sum(1 for r in rows.values() if r.get("baseline") == b), 2)}
                     for b in baselines],
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
    L.append(f"Written by `tools/libero/eval.py` on {rep['date']} from {sum(c['episodes'] for c in rep['configs'])} episodes "
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
    for b in rep.get("baseline", []):
        m = b["server"]
        L.append(f"- {', '.join(b['decoders'])}: {b['episodes']} episodes from `{b['results']}`, a run of the same "
                 f"model (checksum checked) on a server with draft head `{m.get('draft_head')}` and drafter "
                 f"`{m.get('drafter')}`, which plain decoding never calls; its times are that run's (mean load "
                 f"average {b['mean_loadavg']}), so the speed-ups compare two runs on this machine, not one.")
    shadowed = [c for c in rep["configs"] if c.get("shadow_episodes")]
    if shadowed:
        L.append("")
        L.append("### Plain decoding on the same frames")
        L.append("")
        L.append("With `--plain-shadow`, every frame of these episodes also went to plain decoding (recorded, never "
                 "executed; `closed_loop/shadow.py`), next to the decoder's own call: plain's time on the same "
                 "frames at the same moment, and how far the decoder's action is from the one plain decoding would "
                 "have taken in the state the decoder's actions led to. Order: the first call after the ~0.2 s "
                 "render pays a cold-start cost the second does not, so the calls take turns going first ('taking "
                 "turns'; 'first call' compares each decoder's steps where it went first, as a control loop calls "
                 "it after an idle period); runs before that change always called the decoder first ('decoder "
                 "first'), which favours plain.")
        L.append("")
        L.append("| decoder | order | episodes | steps | plain decode ms/action | decoder decode ms/action | "
                 "decode speed-up | decode speed-up, first call | whole-action speed-up | steps with plain's tokens "
                 "| mean action L1 to plain's |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in shadowed:
            for order, g in c["shadow_by_order"].items():
                L.append(f"| {c['name']} | {order} | {g['shadow_episodes']} | {g['shadow_steps']} | "
                         f"{_fmt(g['shadow_plain_decode_ms_per_action'], 2)} | "
                         f"{_fmt(g['shadow_decode_ms_per_action'], 2)} | {_fmt(g['shadow_decode_speedup'], 2)}x | "
                         f"{_fmt(g.get('first_call_decode_speedup'), 2)}{'x' if g.get('first_call_decode_speedup') else ''} | "
                         f"{_fmt(g['shadow_policy_speedup'], 2)}x | "
                         f"{_fmt(g['shadow_same_tokens_fraction'], 1, True)} | {_fmt(g['shadow_action_l1'], 4)} |")
        L.append("")
        for c in shadowed:
            for name, e in (c.get("shadow_exact") or {}).items():
                L.append(f"- `{name}` on the frames of `{c['name']}`'s episodes: {e['differing_steps']} of "
                         f"{e['steps']} frames differ from plain's tokens or action ({e['episodes']} episodes, "
                         f"{e['episodes_with_differences']} with a difference); accept length {_fmt(e['accept_len'], 2)}, "
                         f"decode speed-up {_fmt(e['decode_speedup'], 2)}x over plain on the same frames.")
        L.append("")
    errs = [c for c in rep["configs"] if c["episode_errors"] or c["history_restarts"] or c["non_action_tokens"]]
    for c in errs:
        L.append(f"- {c['name']}: {c['episode_errors']} episodes ended by an env exception, "
                 f"{c['history_restarts']} actions where the server restarted the episode's history, "
                 f"{c['non_action_tokens']} non-action tokens.")
    L.append("")
    write_markdown_section(L, rep["vs_plain"])
    L.append("## Strict equals plain")
    L.append("")
    frame_checks = [(c["name"], n, e) for c in rep["configs"] for n, e in (c.get("shadow_exact") or {}).items()]
    if not rep["strict_equals_plain"] and not frame_checks:
        L.append("Not checked: the run has no plain and strict episodes on the same initial states.")
    if not rep["strict_equals_plain"] and frame_checks:
        L.append("Not as whole episodes (the run has no plain and strict episodes on the same initial states), but "
                 "frame by frame, on the frames of other decoders' episodes (`--shadow-exact`):")
        L.append("")
    for primary, name, e in frame_checks:
        L.append(f"- `{name}` vs plain on `{primary}`'s frames: identical on {e['steps'] - e['differing_steps']} of "
                 f"{e['steps']} frames ({e['episodes']} episodes).")
    if frame_checks:
        L.append("")
    for chk in rep["strict_equals_plain"]:
        if chk.get("lockstep"):
            L.append(f"{chk['lockstep']} of `{chk['decoder']}`'s episodes ran in lockstep with plain's: the same "
                     f"frame sent to both at every step, and the tokens and action compared there; a difference "
                     f"would have stopped the copy and run `{chk['decoder']}`'s own episode instead "
                     f"(`tools/libero/closed_loop/lockstep.py`). The others ran as episodes of their own.")
            L.append("")
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
                 f"episodes), the final state last: the first success and the first failure of each task, "
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
    if t.get("lockstep_episodes"):
        L.append(f"Not counted there: {t['lockstep_episodes']} lockstep episodes, whose own server calls took "
                 f"{t['lockstep_call_s_sum']} s.")
    L.append("")
    L.append("Reproduce: `MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/eval.py --spawn ...` (see "
             "tools/libero/README.md); `--report-only` rebuilds this file from the results JSONL.")
    L.append("")
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(L))
    os.replace(tmp, path)


def write_report(out, videos, rows):
    """OUT.json and OUT.md from the results rows, with the GIFs in `videos` of those episodes."""
    if not rows:
        log("no finished episodes: no report written")
        return None
    media = media_of(videos, rows)
    rep = build_report(rows, media)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json.tmp", "w") as f:
        json.dump(rep, f, indent=1)
    os.replace(out + ".json.tmp", out + ".json")
    media_rel = os.path.relpath(os.path.abspath(videos), os.path.dirname(os.path.abspath(out))) \
        if videos else ""
    write_markdown(rep, out + ".md", media_rel)
    log(f"wrote {out}.json and {out}.md ({len(rows)} episodes)")
    return rep
