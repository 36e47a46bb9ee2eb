#!/usr/bin/env python3
"""Checks of closed_loop/compare.py without the simulator (numpy only):

    tools/.venv-libero/bin/python tools/libero/test_compare.py      # prints "ok" and exits 0

Newcombe's interval reproduces the paper's worked example; the paired counts, the margin verdict and the first
differing step are computed from results rows as eval.py writes them.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

from closed_loop.decoders import parse_decoder  # noqa: E402
from closed_loop.compare import newcombe, newcombe_paired, versus_plain, wilson_exact  # noqa: E402
from closed_loop.episode import episode_seed, pack_tokens  # noqa: E402
from closed_loop.results import check_server, merge_baseline, result_key  # noqa: E402
from jsonl_log import append_row  # noqa: E402


def close(a, b, tol=5e-5):
    return abs(a - b) <= tol


def row(decoder, init, success, tokens, placement=None):
    r = {"suite": "libero_object", "task_id": 0, "init_id": init, "decoder": decoder, "success": success,
         "tokens_z": pack_tokens(np.asarray(tokens, dtype=np.int64))}
    if placement is not None:
        r["placement"] = placement
    return r


def main():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, example (a): 56/70 vs 48/80, method 10.
    lo, hi = newcombe(48, 80, 56, 70)
    assert close(lo, 0.0524) and close(hi, 0.3339), (lo, hi)
    # Wilson for 0/100: the upper end 3.70%.
    wl, wh = wilson_exact(0, 100)
    assert close(wl, 0.0, 1e-12) and close(wh, 0.0370), (wl, wh)
    assert newcombe(0, 0, 1, 2) == (None, None)

    # Paired: uncorrelated pairs (cross-product within the continuity correction) give the unpaired interval;
    # correlated pairs a narrower one; the interval holds its 95% coverage on simulated correlated pairs.
    # (2, 4, 4, 10): cross-product 4 is within n/2; (0, 0, 4, 6): no decoder success, so no correlation
    for a, b, c_, d in [(2, 4, 4, 10), (0, 0, 4, 6)]:
        n = a + b + c_ + d
        assert all(close(x, y, 1e-12) for x, y in zip(newcombe_paired(a, b, c_, d), newcombe(a + c_, n, a + b, n)))
    lo_p, hi_p = newcombe_paired(55, 2, 5, 58)
    lo_u, hi_u = newcombe(60, 120, 57, 120)
    assert lo_u < lo_p < -0.025 < hi_p < hi_u, (lo_p, hi_p, lo_u, hi_u)
    assert newcombe_paired(0, 0, 0, 0) == (None, None)
    rng = np.random.default_rng(0)
    probs, true_diff, n, trials = [0.45, 0.03, 0.05, 0.47], 0.03 - 0.05, 120, 3000
    covered = 0
    for counts in rng.multinomial(n, probs, size=trials):
        lo, hi = newcombe_paired(*[int(x) for x in counts])
        covered += lo <= true_diff <= hi
    assert 0.93 <= covered / trials <= 0.985, covered / trials

    toks = [[300] * 7] * 5
    other = [[300] * 7] * 2 + [[301] + [300] * 6] * 3
    rows = {}
    for init, (ps, rs, rt) in enumerate([(True, True, toks), (True, False, other), (False, True, other),
                                         (False, False, toks), (False, False, toks[:3])]):
        for r in (row("plain", init, ps, toks), row("relaxed9", init, rs, rt)):
            rows[result_key(r)] = r
    # an unpaired episode is left out
    extra = row("relaxed9", 9, True, toks)
    rows[result_key(extra)] = extra
    c = versus_plain(rows, "relaxed9")
    assert c["paired_episodes"] == 5, c
    assert (c["both_succeed"], c["plain_only"], c["decoder_only"], c["both_fail"]) == (1, 1, 1, 2), c
    assert c["plain_successes"] == 2 and c["successes"] == 2 and c["difference"] == 0.0, c
    assert c["difference_95"][0] < -0.03 and not c["within_margin_shown"], c  # 5 pairs show nothing
    # inits 1 and 2 differ at step 2; init 4 is a prefix of plain's (ends earlier): differs at step 3
    assert c["episodes_with_other_actions"] == 3 and c["median_first_differing_step"] == 2, c
    assert versus_plain(rows, "strict") is None

    # placements: a row without the field is placement 0; episodes pair only within one (init, placement)
    assert result_key(row("plain", 3, True, toks)) == result_key(row("plain", 3, True, toks, placement=0))
    prow = {}
    for r in (row("plain", 0, True, toks, 0), row("relaxed9", 0, True, toks, 0), row("plain", 0, True, toks, 1),
              row("relaxed9", 0, False, other, 1), row("relaxed9", 0, True, toks, 2)):
        prow[result_key(r)] = r
    c = versus_plain(prow, "relaxed9")
    assert c["paired_episodes"] == 2 and c["plain_only"] == 1 and c["both_succeed"] == 1, c
    # placement 0 keeps the seed of runs made before placements existed; others differ
    assert episode_seed(7, "libero_goal", 1, 0) == episode_seed(7, "libero_goal", 1, 0, 0)
    assert len({episode_seed(7, "libero_goal", 1, 0, p) for p in range(3)}) == 3

    # 0/100 vs 0/100 does not show a 3-point margin (the Wilson upper end is 3.7 points); 0/200 vs 0/200 does.
    assert close(newcombe(0, 100, 0, 100)[0], -0.0370)
    assert newcombe(0, 200, 0, 200)[0] > -0.03
    # decoder names: the EAGLE-only settings name their drafter; the others take the server's
    staged = {"drafter": "staged"}
    assert parse_decoder("relaxed9", staged)[0] == {"relaxed": 9}
    assert parse_decoder("relaxed9g", staged)[0]["speculation"]["drafter"] == staged
    field, cfg = parse_decoder("relaxed9eg", staged)
    assert field["speculation"] == {"radius": {"uniform": 9}, "exempt_dims": [6], "drafter": {"drafter": "eagle"}}
    assert cfg["drafter"] == "eagle" and cfg["exempt_dims"] == [6], cfg
    assert parse_decoder("relaxed9e", staged)[0]["speculation"]["exempt_dims"] == []
    field, cfg = parse_decoder("relaxed9v", staged)
    assert field["speculation"] == {"radius": {"uniform": 9}, "exempt_dims": [], "drafter": staged,
                                    "emit": "verifier"}, field
    assert cfg["emit"] == "verifier" and "drafter" not in cfg, cfg
    assert parse_decoder("relaxed9evg", staged)[0]["speculation"] == {
        "radius": {"uniform": 9}, "exempt_dims": [6], "drafter": {"drafter": "eagle"}, "emit": "verifier"}
    field, cfg = parse_decoder("relaxed9pv", staged)
    assert field["speculation"] == {"radius": {"uniform": 9}, "exempt_dims": [], "emit": "verifier",
                                    "drafter": {"drafter": "previous_action"}}, field
    assert cfg["drafter"] == "previous_action" and cfg["emit"] == "verifier", cfg
    for bad in ("relaxed9ge", "relaxed9ve", "relaxed9ep", "relaxed9pe", "relaxed", "eagle9"):
        try:
            parse_decoder(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} parsed")
    # a resumed run must be the same server setup: names, and the folders' checksums where rows have them
    now = {"model": "m", "draft_head": "d", "drafter": "x", "model_fingerprint": "crc32:1",
           "draft_head_fingerprint": "crc32:2"}
    legacy = {"model": "m", "draft_head": "d", "drafter": "x"}
    assert check_server({1: {"server": now}, 2: {"server": legacy}}, "f", now) == 1
    for old in ({**now, "model_fingerprint": "crc32:9"}, {**now, "draft_head_fingerprint": None},
                {**legacy, "model": "other"}):
        try:
            check_server({1: {"server": old}}, "f", now)
        except SystemExit:
            continue
        raise AssertionError(f"{old} accepted")

    # compare_models: two models' episodes pair only on the same scene, initial state and step limit
    import compare_models
    same = {"init_sha1": "i", "scene_sha1": "s", "max_steps": 300, "unnorm_key": "u"}
    ref = {result_key(r): {**r, **same} for r in (row("plain", 0, True, [[1] * 7]), row("plain", 1, False, [[1] * 7]),
                                                   row("plain", 2, True, [[1] * 7]))}
    new = {result_key(r): {**r, **same} for r in (row("plain", 0, True, [[2] * 7]), row("plain", 1, True, [[2] * 7]),
                                                   row("strict", 1, True, [[2] * 7]))}
    pairs = compare_models.pairs_of(ref, new, "plain")
    assert [k[2] for k, _, _ in pairs] == [0, 1], pairs  # init 2 is not in the new file; strict is not plain
    s = compare_models.summary(pairs)
    assert (s["ref_successes"], s["new_successes"], s["ref_only"], s["new_only"]) == (1, 2, 0, 1), s
    for field, value in (("scene_sha1", "other"), ("init_sha1", "other"), ("max_steps", 220)):
        moved = {k: ({**r, field: value} if k[2] == 1 else r) for k, r in new.items()}
        try:
            compare_models.pairs_of(ref, moved, "plain")
        except compare_models.PairingError as exc:
            assert field in str(exc), exc
            continue
        raise AssertionError(f"a pair with another {field} was accepted")
    check_baseline()
    check_plain_shadow()
    print("ok")


def check_baseline():
    """--baseline: plain episodes of the same model from another file join the rows; anything else is refused."""
    import tempfile
    srv = {"model": "m", "model_fingerprint": "crc32:1", "draft_head": "d", "draft_head_fingerprint": "crc32:2"}
    old_srv = {**srv, "draft_head": None, "draft_head_fingerprint": None}
    same = {"init_sha1": "i", "scene_sha1": "s", "max_steps": 300}

    def rows_of(*rs):
        return {result_key(r): r for r in rs}

    mine = rows_of(*({**row("relaxed9", i, True, [[1] * 7]), **same, "server": srv} for i in (0, 1)))
    base_rows = [{**row(d, i, i == 0, [[1] * 7]), **same, "server": old_srv} for i in (0, 1, 2)
                 for d in ("plain", "strict")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "base.jsonl")
        for r in base_rows:
            append_row(path, r)
        merged = merge_baseline(mine, "new.jsonl", path)
        added = {k: r for k, r in merged.items() if k not in mine}
        assert sorted(k[2] for k in added) == [0, 1, 2] and all(k[-1] == "plain" for k in added), added
        assert all(r["baseline"] == path for r in added.values())
        c = versus_plain(merged, "relaxed9")
        assert c["paired_episodes"] == 2 and c["decoder_only"] == 1, c
        refusals = {
            "another model": ({}, {"model_fingerprint": "crc32:9"}),
            "an episode in both": ({"decoder": "plain"}, {}),
            "another scene": ({}, {"scene_sha1": "other"}),
        }
        for what, (mine_change, base_change) in refusals.items():
            bad_path = os.path.join(tmp, what.replace(" ", "_") + ".jsonl")
            for r in base_rows:
                changed = {**r, **{k: v for k, v in base_change.items() if k != "model_fingerprint"}}
                if "model_fingerprint" in base_change:
                    changed["server"] = {**old_srv, **base_change}
                append_row(bad_path, changed)
            own = rows_of(*({**r, **mine_change} for r in mine.values()))
            try:
                merge_baseline(own, "new.jsonl", bad_path)
            except SystemExit:
                continue
            raise AssertionError(f"a baseline with {what} was accepted")



def check_plain_shadow():
    """PlainShadow records plain's answers on the decoder's frames (never its own body changes), and the report's
    shadow figures are the sums' ratios."""
    from closed_loop.report import shadow_summary
    from closed_loop.shadow import PlainShadow

    class FakeClient:
        def __init__(self, answers):
            self.answers, self.bodies = list(answers), []

        def request(self, method, path, body):
            self.bodies.append(body)
            return self.answers.pop(0)

    def answer(tokens, action, decode_ms):
        return {"tokens": tokens, "action": action, "stats": {"times_ms": {"decode": decode_ms}, "policy_ms": 5.0}}

    primary = {"image": "frame", "decoder": {"relaxed": 9}, "episode_id": "e/relaxed9/1", "reset": True}
    client = FakeClient([answer([1] * 7, [0.0] * 7, 2.0), answer([2] * 7, [0.5] * 7, 3.0)])
    sh = PlainShadow("e/plain-shadow/1")
    assert not sh.plain_first(0) and sh.plain_first(1)
    # step 0: the decoder's call came first; step 1: plain's (`call`), before the decoder's
    sh.run(client, primary, 0, [1] * 7, np.zeros(7), {"times_ms": {"decode": 1.0}})
    called = sh.call(client, primary, 1)
    sh.run(client, primary, 1, [1] * 7, np.zeros(7), {"times_ms": {"decode": 1.5}}, called)
    assert primary["decoder"] == {"relaxed": 9} and primary["episode_id"] == "e/relaxed9/1"
    assert all(b["decoder"] == "plain" and b["episode_id"] == "e/plain-shadow/1" and b["image"] == "frame"
               for b in client.bodies), client.bodies
    out = sh.summary()
    assert (out["steps"], out["same_tokens_steps"]) == (2, 1) and close(out["action_l1_sum"], 0.5), out
    assert close(out["stats"]["decode_ms"], 5.0) and out["stats"]["calls"] == 2, out
    assert out["first_call"] == {"decoder": {"steps": 1, "plain_decode_ms": 2.0, "decoder_decode_ms": 1.0},
                                 "plain": {"steps": 1, "plain_decode_ms": 3.0, "decoder_decode_ms": 1.5}}, out
    try:
        PlainShadow("x").run(FakeClient([answer([1] * 7, [0.0] * 6, 1.0)]), primary, 0, [1] * 7, np.zeros(7), {})
    except ValueError:
        pass
    else:
        raise AssertionError("a plain answer of another shape was accepted")

    # an exact rider (strict) answers after plain on the same frame and is compared with plain's answer
    client = FakeClient([answer([1] * 7, [0.0] * 7, 2.0), answer([1] * 7, [0.0] * 7, 1.0),
                         answer([2] * 7, [0.5] * 7, 3.0), answer([2] * 7, [0.25] * 7, 1.5)])
    ex = PlainShadow("e/plain-shadow/2", exact=[("strict", "strict")])
    for step in range(2):
        ex.run(client, primary, step, [1] * 7, np.zeros(7), {})
    assert [b["decoder"] for b in client.bodies] == ["plain", "strict"] * 2, client.bodies
    assert client.bodies[1]["episode_id"] == "e/strict-shadow/2" and client.bodies[1]["image"] == "frame"
    strict = ex.summary()["exact"]["strict"]
    assert (strict["steps"], strict["differing_steps"], strict["first_differing_steps"]) == (2, 1, [1]), strict
    from closed_loop.report import exact_summary
    e = exact_summary([ex.summary()])["strict"]
    assert (e["steps"], e["differing_steps"], e["episodes_with_differences"]) == (2, 1, 1), e
    assert close(e["decode_speedup"], 5.0 / 2.5), e

    rows = [{"stats": {"decode_ms": 2.5, "policy_ms": 8.0, "calls": 2}, "plain_shadow": out},
            {"stats": {"decode_ms": 9.0, "policy_ms": 9.0, "calls": 2}}]  # no shadow: left out
    got = shadow_summary(rows)
    assert got["shadow_episodes"] == 1 and got["shadow_steps"] == 2, got
    assert close(got["shadow_decode_speedup"], 2.0) and close(got["shadow_policy_speedup"], 10.0 / 8.0), got
    assert close(got["shadow_same_tokens_fraction"], 0.5) and close(got["shadow_action_l1"], 0.25), got
    assert shadow_summary(rows[1:]) == {"shadow_episodes": 0}
    # the steps where each went first: plain 3.0 ms against the decoder's 1.0 ms
    turns = got["shadow_by_order"]["taking turns"]
    assert list(got["shadow_by_order"]) == ["taking turns"] and close(turns["first_call_decode_speedup"], 3.0), got
    # a row of a run before the turns (no first_call) is summed apart
    old = dict(out)
    del old["first_call"]
    got = shadow_summary(rows[:1] + [{"stats": {"decode_ms": 5.0, "policy_ms": 10.0, "calls": 2},
                                      "plain_shadow": old}])
    assert list(got["shadow_by_order"]) == ["decoder first", "taking turns"], got
    assert close(got["shadow_by_order"]["decoder first"]["shadow_decode_speedup"], 1.0), got
    assert close(got["shadow_decode_speedup"], round(10.0 / 7.5, 3)), got


if __name__ == "__main__":
    main()
