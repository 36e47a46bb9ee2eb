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
import os
import random
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_env  # noqa: E402  (reads MUJOCO_GL before robosuite can set it)
from generate import MAX_STEPS, SUITES, log  # noqa: E402

# The pieces, one idea each, in closed_loop/: client (HTTP to the server, json-numpy, --spawn), decoders (the
# --decoders names), episode (one episode of the protocol above), media (the GIFs), results (the resumable
# JSONL), report (OUT.json / OUT.md), schedule (the work order and progress lines). This file is the command line.
from closed_loop.client import (Client, ServerError, SpawnedServer, probe_decoders, server_setup,  # noqa: E402
                                unnorm_keys)
from closed_loop.decoders import parse_decoder  # noqa: E402
from closed_loop.episode import SEED  # noqa: E402
from closed_loop.media import media_of  # noqa: E402
from closed_loop.report import write_report  # noqa: E402
from closed_loop.results import check_run_settings, check_server, load_results, merge_baseline  # noqa: E402
from closed_loop.schedule import run_visits, visit_order  # noqa: E402

EVAL_INITS = range(0, 10)


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
                    help="comma-separated: plain, strict, relaxedR, relaxedRg (gripper exempt), relaxedRe (EAGLE "
                         "head alone), relaxedRv (the verifier's token emitted), combined as relaxedRevg, "
                         "relaxedR0-R1-R2-R3-R4-R5-R6 (per dimension)")
    ap.add_argument("--lockstep", default="", help="decoders that must reproduce plain (strict), run on plain's "
                    "frames inside its episodes and checked against its tokens and action at every step; one that "
                    "differs runs its own episode (closed_loop/lockstep.py)")
    ap.add_argument("--plain-shadow", action="store_true", help="every decoder but plain also sends each of its "
                    "frames to plain decoding, recorded and never executed (closed_loop/shadow.py): plain's decode "
                    "time on the same frames in the same run, and the decoder's distance from plain's action")
    ap.add_argument("--shadow-exact", default="", help="with --plain-shadow: decoders that must reproduce plain "
                    "(strict) also answer every frame and are compared with plain's answer there")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--tasks", default="0-9", help="task ids, e.g. 0-9 or 0,3,5")
    ap.add_argument("--inits", default="0-9", help="held-out init ids (0-9), e.g. 0-9 or 0,1")
    ap.add_argument("--placements", type=int, default=1, help="fixture placements per init (np.random seeds of "
                    "env.reset(); placement 0 is the one runs without this option used): more paired episodes than "
                    "tasks x held-out inits give")
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
    ap.add_argument("--baseline", default="", help="the report also takes the plain episodes of this results file: "
                    "a run of the same model (checked by checksum) on a server without the draft head this run "
                    "added, which plain decoding never calls")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    if args.out.endswith(".json") or args.out.endswith(".md"):
        args.out = os.path.splitext(args.out)[0]

    if args.baseline and not os.path.isfile(args.baseline):
        sys.exit(f"eval.py: --baseline: no file {args.baseline}")
    if args.report_only:
        write_report(args.out, args.videos, with_baseline(args))
        return

    decoders = [d for d in args.decoders.split(",") if d]
    for d in decoders:
        try:
            parse_decoder(d)
        except ValueError as exc:
            sys.exit(f"eval.py: --decoders: {exc}")
    if len(set(decoders)) != len(decoders):
        sys.exit("eval.py: --decoders: a decoder is named twice")
    lockstep = [d for d in args.lockstep.split(",") if d]
    for d in lockstep:
        if d not in decoders or d == "plain" or parse_decoder(d)[1]["policy"] != "strict":
            sys.exit(f"eval.py: --lockstep: {d!r} is not a strict decoder among --decoders (only a decoder that "
                     f"must reproduce plain can ride along plain's episodes)")
    if lockstep:
        if "plain" not in decoders:
            sys.exit("eval.py: --lockstep needs plain among --decoders")
        decoders = ["plain"] + [d for d in decoders if d != "plain"]  # plain first, so its riders join it
    shadow_exact = [d for d in args.shadow_exact.split(",") if d]
    if shadow_exact and not args.plain_shadow:
        sys.exit("eval.py: --shadow-exact needs --plain-shadow")
    for d in shadow_exact:
        if d == "plain" or parse_decoder(d)[1]["policy"] != "strict":
            sys.exit(f"eval.py: --shadow-exact: {d!r} is not a strict decoder (only a decoder that must reproduce "
                     f"plain can be checked against it)")
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
    check_run_settings(done, args.results, args.max_steps_scale, args.seed)
    # GIFs of episodes that are not in the results file (a smoke test's, say) are replaced
    media = media_of(args.videos, done)
    have_media = {(m["suite"], m["task_id"], m["success"]) for m in media}

    spawned, status = None, 0

    def on_term(signum, frame):  # SIGTERM: stop cleanly, stopping the spawned server too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.spawn:
            spawned = SpawnedServer(args.binary, args.serve_args.split(), args.server_log, ROOT)
            url = spawned.url
        else:
            url = args.server.rstrip("/")
        client = Client(url)
        client.request("GET", "/health")
        info = client.request("GET", "/info")
        server = server_setup(info)
        unchecked = check_server(done, args.results, server)
        if unchecked:
            log(f"note: {unchecked} rows of {args.results} predate the server's checksums and were matched by "
                f"model, draft head and drafter names only")
        unnorm = unnorm_keys(info, suites)
        fields = {d: parse_decoder(d, info.get("drafter_config"))[0] for d in decoders}
        log(f"server {url}: model {server['model']}, draft head {server['draft_head']}, drafter "
            f"{server['drafter']}, device {server['device']}, dtype {server['dtype']}")
        probe_decoders(client, decoders, fields, unnorm[suites[0]])

        visits = visit_order(suites, tasks, inits, args.order, args.per_visit, args.shard)
        placements = tuple(range(args.placements))
        todo_total = sum(1 for s, t, ii in visits for i in ii for p in placements for d in decoders
                         if (s, t, i, p, d) not in done)
        log(f"resume: {len(done)} episodes in {args.results}; {todo_total} to run "
            f"({len(suites)} suites x {len(tasks)} tasks x {len(inits)} inits x {len(placements)} placements x "
            f"{len(decoders)} decoders)")
        prog = run_visits(visits, decoders, done, client, fields, unnorm, server, results=args.results,
                          videos=args.videos, media=media, have_media=have_media, seed=args.seed,
                          scale=args.max_steps_scale, placements=placements, lockstep=lockstep,
                          plain_shadow=args.plain_shadow,
                          shadow_exact=[(d, parse_decoder(d, info.get("drafter_config"))[0]) for d in shadow_exact])
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
    write_report(args.out, args.videos, with_baseline(args))
    sys.exit(status)


def with_baseline(args):
    """The results rows, plus --baseline's plain rows when given."""
    rows = load_results(args.results)
    if args.baseline and rows:
        rows = merge_baseline(rows, args.results, args.baseline)
    return rows


if __name__ == "__main__":
    main()
