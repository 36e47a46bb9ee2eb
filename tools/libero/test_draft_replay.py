#!/usr/bin/env python3
"""Checks of draft_replay.py on hand-made actions (numpy only):

    tools/.venv-libero/bin/python tools/libero/test_draft_replay.py      # prints "ok" and exits 0

Each case's passes follow from the engine's rules by hand: the prefill gives dimension 0, a pass drafts
at most the tokens left minus one and keeps the accepted prefix plus its own token, the last token left
takes a one-row step.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from draft_replay import replay, replay_action  # noqa: E402

BASE = np.array([100, 110, 120, 130, 140, 150, 255])


def moved(dim, by):
    action = BASE.copy()
    action[dim] += by
    return action


def main():
    # Nothing moved: one pass of the root and 5 drafted tokens, the gripper its own.
    assert replay_action([BASE], BASE, 9) == [6]
    # Within the radius: still one pass.
    assert replay_action([BASE], moved(3, 9), 9) == [6]
    # Dimension 2 moved past the radius: the first pass keeps dimension 1 and gives 2; the second
    # drafts 3-5 (4 rows) and gives 6.
    assert replay_action([BASE], moved(2, 10), 9) == [6, 4]
    # Dimension 5 moved: the first pass gives 1-5, the gripper alone takes a one-row step.
    assert replay_action([BASE], moved(5, -20), 9) == [6, 1]
    # Dimension 1 moved: the first pass gives only it; the second drafts 2-5 and gives 6.
    assert replay_action([BASE], moved(1, 30), 9) == [6, 5]
    # The gripper is never drafted: flipping it costs nothing.
    assert replay_action([BASE], moved(6, -255), 0) == [6]
    # Two chains sharing their first two tokens: 1 + 5 + 3 distinct nodes; the second one's
    # dimension 3 matches where the first's does not, so one pass.
    other = moved(3, 50)
    assert replay_action([BASE, other], other, 9) == [9]

    # An episode of two identical actions: the second takes one pass of 6 rows, plain six of one.
    passes, speedup, actions = replay([np.stack([BASE, BASE])], "previous_action", 9, (100.0, 10.0))
    assert (passes, actions) == (1.0, 1), (passes, actions)
    assert abs(speedup - 6 * 110 / 160) < 1e-12, speedup
    try:
        replay([BASE[None, :]], "previous_action", 9, (1.0, 1.0))
    except ValueError:
        pass
    else:
        raise AssertionError("an episode of one action has nothing to replay: expected an error")
    print("ok")


if __name__ == "__main__":
    main()
