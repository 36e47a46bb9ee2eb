"""The work order of a run: scene visits (rounds of init ids over every task, or a task's inits in one build,
split between --shard workers), every decoder on an init before the next init, episodes already in the results
file skipped; the progress lines with an ETA."""
import time

from generate import MAX_STEPS, NUM_WAIT, Runner, log

from .episode import run_episode
from .media import save_media
from .report import _per  # the report's rounded ratio, None over 0
from .results import append_result


def visit_order(suites, tasks, inits, order, per_visit, shard):
    """(suite, task, init ids) per scene build. init: rounds of `per_visit` init ids over every task (a stopped
    run covers every task); task: all of a task's inits in one build, suite after suite. `shard` "i/n": every
    n-th visit from the i-th."""
    if order == "init":
        k = max(1, per_visit)
        visits = [(s, t, inits[j:j + k]) for j in range(0, len(inits), k) for t in tasks for s in suites]
    else:
        visits = [(s, t, inits) for s in suites for t in tasks]
    shard_i, shard_n = (int(x) for x in shard.split("/"))
    return [v for j, v in enumerate(visits) if j % shard_n == shard_i]


class Progress:
    """Counts for the progress lines; ETA = seconds per step of step limit so far (failures run to the limit)
    times the step limits of the episodes left, plus the scene builds left."""

    def __init__(self, visits, decoders, done, scale, placements=(0,)):
        self.visits, self.decoders, self.done, self.scale = visits, decoders, done, scale
        self.placements = placements
        self.todo = self._left()
        self.n_run, self.steps, self.budget, self.n_builds = 0, 0, 0, 0
        self.t0, self.wall, self.build_s = time.time(), 0.0, 0.0

    def _limit(self, suite):
        return max(1, int(round(MAX_STEPS[suite] * self.scale)))

    def _left(self):
        return {(s, t, i, p, d) for s, t, ii in self.visits for i in ii for p in self.placements
                for d in self.decoders if (s, t, i, p, d) not in self.done}

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
                           if any((s, t, i, p, d) in left for i in ii for p in self.placements
                                  for d in self.decoders)})
        eta = (sum(self._limit(k[0]) for k in left) * self.wall / max(self.budget, 1)
               + builds_left * self.build_s / max(self.n_builds, 1))
        rs = [r for r in self.done.values() if r["decoder"] == rec["decoder"]]
        st, tm = rec["stats"], rec["times"]
        pl = f"p{rec['placement']}" if rec.get("placement") else ""
        return (f"[{self.n_run}/{len(self.todo)}] {rec['suite']} task{rec['task_id']:02d} init{rec['init_id']:02d}{pl} "
                f"{rec['decoder']}: success={rec['success']} steps={rec['steps']}/{rec['max_steps']} "
                f"{tm['wall_s']:.0f}s (render {tm['render_s']:.0f}s, server {tm['client_s']:.0f}s, physics "
                f"{tm['env_s']:.0f}s) accept={_per(st['spec_cycle_tokens'], st['spec_cycles'], 2)} | "
                f"{rec['decoder']} {sum(r['success'] for r in rs)}/{len(rs)} | "
                f"{self.steps / max(self.wall, 1e-9):.1f} env steps/s | elapsed {(time.time() - self.t0) / 60:.1f} "
                f"min, ETA {eta / 3600:.1f} h")


def run_visits(visits, decoders, done, client, fields, unnorm, server, *, results, videos, media, have_media, seed,
               scale, placements=(0,), lockstep=(), plain_shadow=False, shadow_exact=()):
    """Every episode of `visits` x `placements` x `decoders` not in `done`, each appended to `results` (and
    `done`) when it ends; the first success and failure of each task saved as GIFs when `videos`. The `lockstep`
    decoders ride along plain's episodes (closed_loop/lockstep.py) and run on their own only where plain was
    already done or they diverged from it. With `plain_shadow`, every other decoder's episode also sends each frame
to plain decoding (closed_loop/shadow.py), and each of `shadow_exact` ((name, field) pairs) answers it too, checked
against plain's answer. Returns the Progress."""
    prog = Progress(visits, decoders, done, scale, placements)
    for suite, task_id, vinits in visits:
        todo = [(i, p, d) for i in vinits for p in placements for d in decoders
                if (suite, task_id, i, p, d) not in done]
        if not todo:
            continue
        tb = time.time()
        try:
            runner = Runner(suite, task_id)
        except Exception as exc:  # noqa: BLE001
            log(f"ERROR building {suite} task{task_id}: {type(exc).__name__}: {exc} -- skipped")
            continue
        prog.built(time.time() - tb)
        max_steps = max(1, int(round(MAX_STEPS[suite] * scale)))
        try:
            for init_id, placement, dec in todo:
                if (suite, task_id, init_id, placement, dec) in done:  # ran in lockstep with plain
                    continue
                if init_id >= len(runner.init_states):
                    log(f"{suite} task{task_id} has {len(runner.init_states)} init states: init {init_id} "
                        f"skipped")
                    continue
                slot = (suite, task_id)
                want = bool(videos) and not ({slot + (True,), slot + (False,)} <= have_media)
                riders = [(d, fields[d]) for d in lockstep
                          if dec == "plain" and (suite, task_id, init_id, placement, d) not in done]
                rec, frames, rider_rows = run_episode(runner, client, suite, task_id, init_id, dec, fields[dec],
                                                      max_steps, unnorm[suite], seed, want, placement, riders,
                                                      plain_shadow, shadow_exact)
                rec.update(seed=seed, max_steps_scale=scale, server=server,
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S"), video=None)
                if want and slot + (rec["success"],) not in have_media:
                    rec["video"] = save_media(videos, media, rec, frames)
                    have_media.add(slot + (rec["success"],))
                append_result(results, rec)
                done[(suite, task_id, init_id, placement, dec)] = rec
                log(prog.line(rec))
                for row in rider_rows:
                    row.update(seed=seed, max_steps_scale=scale, server=server,
                               finished=time.strftime("%Y-%m-%dT%H:%M:%S"), video=None)
                    append_result(results, row)
                    done[(suite, task_id, init_id, placement, row["decoder"])] = row
                    log(prog.line(row))
                for d, _ in riders:
                    if (suite, task_id, init_id, placement, d) not in done:
                        log(f"{d} left plain's episode (tokens or action differed): it runs on its own")
        finally:
            runner.close()
    return prog
