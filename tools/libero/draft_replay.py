"""Replays closed-loop action tokens through model-free drafters: how many verifier passes would an
action take, and what would the decode cost, under relaxed acceptance with the verifier's token
emitted? No rendering and no model: a drafter can be chosen in seconds from episodes already run.

    tools/.venv-libero/bin/python tools/libero/draft_replay.py data/closed_loop/goal4_v3_tuning.jsonl

The replay takes each recorded action as the verifier's choice at every dimension. With the
verifier's token emitted that is exact up to one effect: a relaxed decoder conditions later
dimensions on the drafted prefix, not on the verifier's own. On v3's 108 episodes of relaxed r=9
(`data/closed_loop/goal4_v3_spec.jsonl`) the replay gives 1.598 passes per action where the server
counted 1.60.

The engine's rules, mirrored: the first token of an action comes from the prefill; a pass drafts at
most the tokens left minus one (the last token is always the pass's own); a pass keeps the longest
accepted drafted prefix plus the verifier's token after it; only the last token left takes a plain
one-row step. A tree of several chains costs one row per distinct node.

Cost: a pass over `rows` rows costs `a + b * rows` microseconds (`--pass-cost a,b`; the default is
fitted to `cargo bench --bench verifier -- embedded_model` on the 2-core AVX-512 VM, one thread:
decode 178, chains of 2 / 4 / 7 rows 208 / 250 / 360). Plain decoding is six one-row passes.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from closed_loop.episode import unpack_tokens  # noqa: E402

DIMS = 7


def _velocity(prev, before, gain):
    return np.clip(np.round(prev + gain * (prev - before)), 0, None).astype(np.int64)


# Each drafter: (previous action, the one before it) -> the chains it proposes.
DRAFTS = {
    "previous_action": lambda p, q: [p],
    "constant_velocity": lambda p, q: [_velocity(p, q, 1.0)],
    "half_velocity": lambda p, q: [_velocity(p, q, 0.5)],
    "previous_action+constant_velocity": lambda p, q: [p, _velocity(p, q, 1.0)],
    "previous_action+the_one_before": lambda p, q: [p, q],
    "previous_action+half_velocity": lambda p, q: [p, _velocity(p, q, 0.5)],
}
DRAFTERS = tuple(DRAFTS)


def drafts(name, earlier):
    """The chains (whole actions; the dimensions still to decode are taken from them) the drafter
    `name` proposes after the actions `earlier` (oldest first, at least one; with one, the one
    before is the same)."""
    if name not in DRAFTS:
        raise ValueError(f"unknown drafter {name!r}; one of {sorted(DRAFTS)}")
    prev = earlier[-1]
    return DRAFTS[name](prev, earlier[-2] if len(earlier) >= 2 else prev)


def replay_action(chains, truth, radius):
    """Passes and rows per pass for one action whose verifier choices are `truth` (DIMS tokens), the
    drafter proposing `chains` (whole actions)."""
    rows_per_pass = []
    done = 1  # the prefill's token
    while done < DIMS:
        left = DIMS - done
        if left == 1:
            rows_per_pass.append(1)
            break
        depth = left - 1
        proposed = [tuple(int(t) for t in c[done:done + depth]) for c in chains]
        nodes = {c[:i] for c in proposed for i in range(1, len(c) + 1)}
        rows_per_pass.append(1 + len(nodes))
        best = 0
        for chain in proposed:
            kept = 0
            for i, token in enumerate(chain):
                if abs(token - int(truth[done + i])) > radius:
                    break
                kept += 1
            best = max(best, kept)
        done += best + 1
    return rows_per_pass


def replay(episodes, drafter, radius, pass_cost):
    """Mean passes per action and the decode speed-up over plain for `drafter` on `episodes`
    (arrays [steps, DIMS]); an episode's first action has no draft (the EAGLE head's, not replayed)."""
    a, b = pass_cost
    passes = actions = 0
    cost = plain = 0.0
    for tokens in episodes:
        for step in range(1, len(tokens)):
            earlier = tokens[max(0, step - 2):step]
            rows = replay_action(drafts(drafter, earlier), tokens[step], radius)
            passes += len(rows)
            cost += sum(a + b * r for r in rows)
            plain += (DIMS - 1) * (a + b)
            actions += 1
    if actions == 0:
        raise ValueError("no action with an earlier one to draft from")
    return passes / actions, plain / cost, actions


def load(path, decoder):
    episodes = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("decoder") == decoder and row.get("tokens_z"):
                episodes.append(unpack_tokens(row["tokens_z"], DIMS))
    return episodes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a closed-loop results file (eval.py --results)")
    ap.add_argument("--decoder", default="plain", help="whose episodes to replay")
    ap.add_argument("--radii", default="5,9")
    ap.add_argument("--drafters", default=",".join(DRAFTERS))
    ap.add_argument("--pass-cost", default="165,28", help="a,b: a pass over n rows costs a + b n microseconds")
    args = ap.parse_args()
    episodes = load(args.results, args.decoder)
    if not episodes:
        sys.exit(f"draft_replay.py: no {args.decoder} episodes with tokens in {args.results}")
    pass_cost = tuple(float(v) for v in args.pass_cost.split(","))
    print(f"{len(episodes)} {args.decoder} episodes of {args.results}")
    print("| drafter | radius | actions | passes per action | decode x (cost model) |")
    print("|---|---|---|---|---|")
    for radius in (int(r) for r in args.radii.split(",")):
        for drafter in args.drafters.split(","):
            passes, speedup, actions = replay(episodes, drafter, radius, pass_cost)
            print(f"| {drafter} | {radius} | {actions} | {passes:.3f} | {speedup:.2f}x |")


if __name__ == "__main__":
    main()
