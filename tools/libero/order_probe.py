"""Which call pays the cold start? The held-out frames through a spawned policy server, a decoder and plain decoding
on each frame, in a chosen order, after a chosen pause (the closed loop's render takes ~0.2 s between actions):

    tools/.venv-libero/bin/python tools/libero/order_probe.py --pause 0.2 --order decoder_first
    tools/.venv-libero/bin/python tools/libero/order_probe.py --pause 0.2 --order plain_first

Each run of consecutive steps in the manifest is one episode for the decoder (its previous action carries over);
prints both decoders' verifier passes and decode ms per action and their ratio. No simulator. Measured on the
2-core VM beside two closed-loop workers (v3's 480 frames, relaxed9v): pause 0 -> 0.45 / 1.20 ms (2.69x);
pause 0.2 decoder first -> 0.65 / 1.28 ms (1.98x); pause 0.2 plain first -> 0.56 / 1.66 ms (2.98x).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from closed_loop.client import Client, SpawnedServer, image_field  # noqa: E402
from closed_loop.decoders import parse_decoder  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default=os.path.join(ROOT, "data", "libero_goal_v3_heldout"))
    ap.add_argument("--serve-args", default="--model models/microvla-goal-v3 --draft models/microvla-goal-v3-draft "
                                            "--threads 1")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "examples", "serve"))
    ap.add_argument("--decoder", default="relaxed9v", help="an eval.py decoder name")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds of idle before each frame's two calls")
    ap.add_argument("--order", choices=("decoder_first", "plain_first"), default="decoder_first")
    ap.add_argument("--server-log", default=os.path.join(HERE, "out", "order_probe_server.log"))
    args = ap.parse_args()
    import numpy as np
    from PIL import Image
    with open(os.path.join(args.frames, "manifest.json")) as f:
        manifest = json.load(f)
    server = SpawnedServer(args.binary, args.serve_args.split(), args.server_log, ROOT)
    try:
        client = Client(server.url)
        field = parse_decoder(args.decoder, client.request("GET", "/info").get("drafter_config"))[0]
        calls = [("decoder", field), ("plain", "plain")]
        if args.order == "plain_first":
            calls.reverse()
        totals = {name: {"actions": 0, "passes": 0, "decode_ms": 0.0} for name, _ in calls}
        previous, episode = None, 0
        for entry in manifest:
            key = (entry["task_id"], entry["init_id"])
            fresh = previous is None or key != previous[0] or entry["step"] != previous[1] + 1
            episode += fresh
            previous = (key, entry["step"])
            image = np.asarray(Image.open(os.path.join(args.frames, entry["file"])).convert("RGB"))
            body = {"image": image_field(image), "instruction": entry["instruction"],
                    "unnorm_key": entry["unnorm_key"], "return_stats": True, "reset": fresh}
            time.sleep(args.pause)
            for name, decoder in calls:
                stats = client.request("POST", "/act", dict(body, decoder=decoder,
                                                           episode_id=f"probe/{name}/{episode}"))["stats"]
                t = totals[name]
                t["actions"] += 1
                t["passes"] += stats["verifier_passes"]
                t["decode_ms"] += stats["times_ms"]["decode"]
    finally:
        server.stop()
    for name, t in totals.items():
        print(f"{name}: {t['actions']} actions, {t['passes'] / t['actions']:.3f} passes, "
              f"{t['decode_ms'] / t['actions']:.3f} decode ms per action")
    print(f"{args.decoder} decode speed-up {totals['plain']['decode_ms'] / totals['decoder']['decode_ms']:.2f}x "
          f"({args.order}, pause {args.pause} s, {episode} episodes)")


if __name__ == "__main__":
    main()
