"""The episode GIFs: one success and one failure per task in the --videos folder, listed in its index.json."""
import fcntl
import json
import math
import os

from generate import SUITES

GIF_SIDE, GIF_STRIDE, GIF_MAX_FRAMES = 112, 4, 40


def save_gif(path, frames):
    """One 64-colour palette for all frames (from the first, middle and last), no dithering: ~2 KB a frame
    (per-frame palettes: ~9 KB)."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stride = max(1, math.ceil(len(frames) / GIF_MAX_FRAMES))
    frames = frames[:-1:stride] + [frames[-1]] if stride > 1 else frames
    keys = [frames[0], frames[len(frames) // 2], frames[-1]]
    mosaic = Image.new("RGB", (GIF_SIDE * len(keys), GIF_SIDE))
    for i, f in enumerate(keys):
        mosaic.paste(f, (GIF_SIDE * i, 0))
    pal = mosaic.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    frames = [f.quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    tmp = path + f".tmp{os.getpid()}"
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0, optimize=True,
                   duration=50 * GIF_STRIDE * stride)  # real time at LIBERO's 20 Hz control
    os.replace(tmp, path)


def load_media(videos_dir):
    path = os.path.join(videos_dir, "index.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def media_of(videos_dir, rows):
    """The listed GIFs of episodes in `rows` (results): a GIF of an episode that is not in the results file (a
    smoke test's, say) is neither reported nor kept."""
    eids = {r["episode_id"] for r in rows.values()}
    return [m for m in (load_media(videos_dir) if videos_dir else []) if m.get("episode_id") in eids]


def save_media(videos, media, rec, frames):
    """The episode's GIF in its task's success or failure slot, listed in videos/index.json."""
    name = f"{rec['suite']}_task{rec['task_id']:02d}_{'success' if rec['success'] else 'failure'}.gif"
    entry = {k: rec[k] for k in ("suite", "success", "task_id", "init_id", "decoder", "steps", "instruction",
                                 "episode_id")} | {"file": name}
    # Workers of one run (--shard) share the folder: the GIF and the index change under one lock, and the index
    # is re-read and merged, so one worker's entries never overwrite another's.
    os.makedirs(videos, exist_ok=True)
    with open(os.path.join(videos, "index.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        save_gif(os.path.join(videos, name), frames)
        on_disk = load_media(videos)
        merged = {m["file"]: m for m in media + on_disk}  # the index on disk describes the GIFs on disk
        merged[name] = entry
        media[:] = sorted(merged.values(), key=lambda m: (SUITES.index(m["suite"]), m["task_id"], not m["success"]))
        tmp = os.path.join(videos, f"index.json.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(media, f, indent=1)
        os.replace(tmp, os.path.join(videos, "index.json"))
    return name
