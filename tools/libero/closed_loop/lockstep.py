"""Lockstep episodes: a decoder that must reproduce plain (strict) run on plain's frames instead of in its own
episode.

At every step of a plain episode the same frame goes to each lockstep decoder under its own episode id, and its
tokens and action are compared with plain's. While they are equal, the decoder's own episode would have seen the
same frame next (the simulator is deterministic given the actions; the harness's strict runs reproduced plain's
episodes bit for bit), so by induction its episode is plain's: same actions, same steps, same outcome. Its
statistics (acceptance, passes, decode time) are its own, measured on those frames. At the first step whose
tokens or action differ the lockstep copy stops and records nothing; eval.py then runs that decoder's episode on
its own, so a divergence costs time and never a result. A lockstep row says so (`lockstep_of`), and its times hold only its
own server calls (the frames and physics belong to the plain row)."""
import copy
import time

from .episode import add_stats, new_stats, pack_tokens, rounded_stats, sha1


class LockstepCopy:
    """One lockstep decoder inside one primary episode."""

    def __init__(self, name, field, episode_id):
        self.name, self.field, self.episode_id = name, field, episode_id
        self.acc = new_stats()
        self.tokens, self.raw_actions = [], []
        self.diverged_at = None
        self.answer_decoder = None
        self.client_s = 0.0

    @property
    def alive(self):
        return self.diverged_at is None

    def body(self, primary_body):
        """The primary's request with this decoder and episode id (same frame, instruction, reset flag)."""
        b = dict(primary_body)
        b["decoder"], b["episode_id"] = self.field, self.episode_id
        return b

    def take(self, step, answer, primary_tokens, primary_raw_action, seconds):
        """Record this decoder's answer at `step`; returns False (and stops the copy) when its tokens or its
        action differ from the primary's."""
        import numpy as np
        self.client_s += seconds
        if step == 0:
            self.answer_decoder = answer.get("decoder")
        add_stats(self.acc, answer.get("stats") or {}, answer.get("episode"), step == 0, seconds * 1e3, 0.0)
        tokens = list(answer.get("tokens") or [])
        action = np.asarray(answer.get("action"), dtype=np.float64)
        same = (tokens == list(primary_tokens) and action.shape == primary_raw_action.shape
                and bool(np.array_equal(action, primary_raw_action)))
        if not same:
            self.diverged_at = step
            return False
        self.tokens.append(tokens)
        self.raw_actions.append(action)
        return True

    def record(self, primary_rec, primary_name):
        """This decoder's results row (None after a divergence): the primary's episode with this decoder's
        identity, statistics and call times."""
        import numpy as np
        if not self.alive:
            return None
        rec = copy.deepcopy(primary_rec)
        R = np.stack(self.raw_actions) if self.raw_actions else np.zeros((0, 7))
        rec.update(decoder=self.name, request_decoder=self.field, answer_decoder=self.answer_decoder,
                   episode_id=self.episode_id, lockstep_of=primary_name,
                   tokens_sha1=sha1(np.asarray(self.tokens, dtype="<u2")), raw_actions_sha1=sha1(R.astype("<f8")),
                   tokens_z=pack_tokens(self.tokens),
                   stats=rounded_stats(self.acc),
                   times={"wall_s": round(self.client_s, 2), "warmup_s": 0.0, "render_s": 0.0,
                          "client_s": round(self.client_s, 2), "env_s": 0.0,
                          "loadavg": primary_rec["times"].get("loadavg", 0.0)},
                   http_retries=0)
        return rec


def run_copies(copies, client, primary_body, step, primary_tokens, primary_raw_action):
    """Send the primary's frame to every live copy; returns the seconds spent (not the primary's time)."""
    spent = 0.0
    for c in copies:
        if not c.alive:
            continue
        t0 = time.perf_counter()
        ans = client.request("POST", "/act", c.body(primary_body))
        dt = time.perf_counter() - t0
        spent += dt
        c.take(step, ans, primary_tokens, primary_raw_action, dt)
    return spent
