#!/usr/bin/env python3
"""Checks of closed_loop/media.py without the simulator (PIL only):

    tools/.venv-libero/bin/python tools/libero/test_media.py      # prints "ok" and exits 0

Two workers of one run (--shard) share the --videos folder, each with its own in-memory list: the index must
end up listing every GIF either of them wrote, and each listed entry must describe the GIF on disk.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from PIL import Image  # noqa: E402

from closed_loop.media import GIF_SIDE, load_media, save_media  # noqa: E402


def rec(task_id, success, decoder, episode):
    return {"suite": "libero_goal", "success": success, "task_id": task_id, "init_id": 0, "decoder": decoder,
            "steps": 10, "instruction": "put the bowl on the stove", "episode_id": episode}


def main():
    frames = [Image.new("RGB", (GIF_SIDE, GIF_SIDE), (v, v, v)) for v in (0, 128, 255)]
    with tempfile.TemporaryDirectory() as videos:
        worker_a, worker_b = load_media(videos), load_media(videos)
        save_media(videos, worker_a, rec(1, True, "relaxed9v", "a1"), frames)
        save_media(videos, worker_b, rec(2, True, "relaxed9v", "b1"), frames)
        save_media(videos, worker_a, rec(1, False, "relaxed9e", "a2"), frames)
        # worker b replaces task 1's success GIF that worker a wrote: the index must follow the file
        save_media(videos, worker_b, rec(1, True, "relaxed9e", "b2"), frames)
        save_media(videos, worker_a, rec(4, False, "relaxed9v", "a3"), frames)
        with open(os.path.join(videos, "index.json")) as f:
            index = {m["file"]: m["episode_id"] for m in json.load(f)}
        want = {"libero_goal_task01_success.gif": "b2", "libero_goal_task01_failure.gif": "a2",
                "libero_goal_task02_success.gif": "b1", "libero_goal_task04_failure.gif": "a3"}
        assert index == want, index
        for name in want:
            assert os.path.getsize(os.path.join(videos, name)) > 0, name
        # a --videos folder that does not exist yet is made
        fresh = os.path.join(videos, "new", "media")
        save_media(fresh, load_media(fresh), rec(9, True, "relaxed9v", "c1"), frames)
        assert os.path.getsize(os.path.join(fresh, "libero_goal_task09_success.gif")) > 0
    print("ok")


if __name__ == "__main__":
    main()
