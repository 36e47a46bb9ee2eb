"""Plain decoding's shadow: inside another decoder's episode, the same frame also goes to plain decoding at every
step, under an episode id of its own, and plain's answer is recorded but never executed.

It gives what a separate plain run cannot: plain's decode time on the same frames, at the same moment, on the same
loaded machine (the decode speed-up measured in the same run), and how far the decoder's action is from the one
plain decoding would have taken in the state the decoder's own actions led to. A shadow call costs one server
request per step (a few ms against the ~0.2 s render); its time is kept out of the episode's wall time.

The two calls take turns going first (`plain_first`: odd steps): the first request after the ~0.2 s render pays a
cold-start cost the second does not (measured on v3's held-out frames through the server with a 0.2 s pause before
each frame: decode 0.65 ms for relaxed r=9 called first against 0.56 ms called second, plain 1.66 ms first against
1.28 ms second), so a fixed order would bias the comparison. The summary keeps both decoders' decode times split by
who went first: `first_call` compares them as a control loop meets them, each right after the idle render."""
import time

from .episode import add_stats, new_stats, rounded_stats

PLAIN = "plain"


class ExactRider:
    """A decoder that must give plain's tokens and action on every frame (strict), compared there."""

    def __init__(self, name, field, episode_id):
        self.name, self.field, self.episode_id = name, field, episode_id
        self.acc = new_stats()
        self.steps = 0
        self.differing = []

    def run(self, client, body, step, plain_tokens, plain_action):
        import numpy as np
        b = dict(body)
        b["decoder"], b["episode_id"] = self.field, self.episode_id
        t0 = time.perf_counter()
        ans = client.request("POST", "/act", b)
        dt = time.perf_counter() - t0
        add_stats(self.acc, ans.get("stats") or {}, ans.get("episode"), step == 0, dt * 1e3, 0.0)
        action = np.asarray(ans.get("action"), dtype=np.float64)
        self.steps += 1
        if list(ans.get("tokens") or []) != list(plain_tokens) or not np.array_equal(action, plain_action):
            self.differing.append(step)
        return dt

    def summary(self):
        return {"episode_id": self.episode_id, "steps": self.steps, "differing_steps": len(self.differing),
                "first_differing_steps": self.differing[:5], "stats": rounded_stats(self.acc)}


class PlainShadow:
    def __init__(self, episode_id, exact=()):
        """exact: (name, request field) pairs of decoders checked against plain on the same frames."""
        self.episode_id = episode_id
        self.acc = new_stats()
        self.steps = 0
        self.same_tokens = 0
        self.action_l1 = 0.0
        self.seconds = 0.0
        self.exact = [ExactRider(name, field, episode_id.replace(f"/{PLAIN}-shadow/", f"/{name}-shadow/"))
                      for name, field in exact]
        # steps and both decoders' decode ms, keyed by who went first ("plain" or "decoder")
        self.by_order = {who: {"steps": 0, "plain_decode_ms": 0.0, "decoder_decode_ms": 0.0}
                         for who in ("plain", "decoder")}

    @staticmethod
    def plain_first(step):
        """Whether plain's call comes before the decoder's at `step` (odd steps)."""
        return step % 2 == 1

    def call(self, client, primary_body, step):
        """Plain decoding on the primary's frame: (answer, seconds)."""
        body = dict(primary_body)
        body["decoder"], body["episode_id"] = PLAIN, self.episode_id
        t0 = time.perf_counter()
        ans = client.request("POST", "/act", body)
        dt = time.perf_counter() - t0
        self.seconds += dt
        add_stats(self.acc, ans.get("stats") or {}, ans.get("episode"), step == 0, dt * 1e3, 0.0)
        return ans, dt

    def run(self, client, primary_body, step, primary_tokens, primary_raw_action, primary_stats, called=None):
        """Plain decoding on the primary's frame (or its answer `called` = (answer, seconds) from `call`, made
        before the primary's), compared with the primary's answer; then the exact riders. Returns the seconds
        spent."""
        import numpy as np
        ans, dt = called if called is not None else self.call(client, primary_body, step)
        first = self.by_order["plain" if called is not None else "decoder"]
        first["steps"] += 1
        first["plain_decode_ms"] += ((ans.get("stats") or {}).get("times_ms") or {}).get("decode", 0.0)
        first["decoder_decode_ms"] += ((primary_stats or {}).get("times_ms") or {}).get("decode", 0.0)
        body = dict(primary_body)
        body["decoder"], body["episode_id"] = PLAIN, self.episode_id
        action = np.asarray(ans.get("action"), dtype=np.float64)
        if action.shape != primary_raw_action.shape:
            raise ValueError(f"plain shadow: an action of shape {action.shape}, the decoder's is "
                             f"{primary_raw_action.shape}")
        self.steps += 1
        self.same_tokens += list(ans.get("tokens") or []) == list(primary_tokens)
        self.action_l1 += float(np.abs(action - primary_raw_action).mean())
        for rider in self.exact:
            dt += rider.run(client, body, step, list(ans.get("tokens") or []), action)
        return dt

    def summary(self):
        """The results row's `plain_shadow` field."""
        return {"episode_id": self.episode_id, "steps": self.steps, "same_tokens_steps": self.same_tokens,
                "action_l1_sum": round(self.action_l1, 6), "call_s": round(self.seconds, 2),
                "first_call": {who: {k: round(v, 3) for k, v in d.items()} for who, d in self.by_order.items()},
                "stats": rounded_stats(self.acc), "exact": {r.name: r.summary() for r in self.exact}}
