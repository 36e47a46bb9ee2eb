"""Runs the policy server (examples/serve) against OpenVLA's own client stack, unchanged:
`requests` + `json_numpy.patch()`, as deploy.py's docstring shows. Then measures the server's
overhead per request: the client's round trip minus the policy's own time.

    cargo build --release --example serve
    pip install numpy requests json-numpy pillow
    python tools/serve/check_client.py --requests 200

It starts the server binary on a free port, checks the deploy.py request and its
doubly-encoded form, the base64 PNG form, `return_stats` and an error answer, times the
requests, and stops the server with SIGINT (as Ctrl-C would), requiring a clean exit.
`cargo test` never runs this file.
"""

import argparse
import base64
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import json_numpy

json_numpy.patch()  # As OpenVLA's client does: json.dumps/loads now carry numpy arrays.
import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "put the bowl on the stove"  # the embedded model's sample (data/sample_frame.png)
UNNORM_KEY = "libero_goal_no_noops"


def start_server(binary, extra):
    proc = subprocess.Popen(
        [str(binary), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split(" ", 2)[2].strip()
    raise SystemExit(f"the server exited before listening: {proc.stderr.read()}")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def check_protocol(url, frame, png_bytes):
    # deploy.py's client, verbatim in shape: a numpy uint8 image through json_numpy's patch.
    action = requests.post(
        f"{url}/act",
        json={"image": frame, "instruction": INSTRUCTION, "unnorm_key": UNNORM_KEY},
    ).json()
    assert isinstance(action, np.ndarray), type(action)
    assert action.dtype == np.float64 and action.shape == (7,), (action.dtype, action.shape)

    # The doubly-encoded form for clients that encode the payload themselves.
    payload = json_numpy.dumps({"image": frame, "instruction": INSTRUCTION, "unnorm_key": UNNORM_KEY})
    answer = requests.post(f"{url}/act", json={"encoded": payload}).json()
    assert isinstance(answer, str), type(answer)
    assert np.array_equal(json_numpy.loads(answer), action)

    # The base64 PNG form, and return_stats.
    b64 = base64.b64encode(png_bytes).decode()
    png_action = requests.post(
        f"{url}/act", json={"image": b64, "instruction": INSTRUCTION, "unnorm_key": UNNORM_KEY}
    ).json()
    assert np.array_equal(png_action, action)
    stats = requests.post(
        f"{url}/act",
        json={"image": frame, "instruction": INSTRUCTION, "unnorm_key": UNNORM_KEY, "return_stats": True},
    ).json()
    assert stats["action"] == action.tolist(), (stats["action"], action.tolist())

    error = requests.post(f"{url}/act", json={"image": frame, "instruction": INSTRUCTION, "unnorm_key": "nope"})
    assert error.status_code == 400 and error.json()["error"]["kind"] == "unknown_unnorm_key", error.text
    print(f"protocol: ok (action {np.round(action, 4).tolist()})")


def measure(url, frame, n, session):
    """Round trips of `n` sequential requests whose body is encoded once beforehand, so that the
    client's own JSON encoding is not counted."""
    body = json.dumps(
        {"image": frame, "instruction": INSTRUCTION, "unnorm_key": UNNORM_KEY, "return_stats": True}
    ).encode()
    headers = {"Content-Type": "application/json"}
    post = session.post if session is not None else requests.post
    rows = []
    for _ in range(n + 5):
        start = time.perf_counter()
        response = post(f"{url}/act", data=body, headers=headers)
        text = response.content
        rtt = (time.perf_counter() - start) * 1e3
        stats = json.loads(text)["stats"]
        rows.append((rtt, stats["policy_ms"], stats["server_ms"]))
    return rows[5:]  # The first few warm caches up.


def report(name, rows):
    rtt = [r[0] for r in rows]
    overhead = [r[0] - r[1] for r in rows]
    transport = [r[0] - r[2] for r in rows]
    in_server = [r[2] - r[1] for r in rows]
    line = lambda v: f"median {statistics.median(v):.3f} ms, p90 {percentile(v, 0.9):.3f} ms"  # noqa: E731
    print(f"{name} ({len(rows)} requests)")
    print(f"  round trip           {line(rtt)}")
    print(f"  policy               {line([r[1] for r in rows])}")
    print(f"  overhead (rtt-policy) {line(overhead)}")
    print(f"    in the server      {line(in_server)}")
    print(f"    HTTP + client      {line(transport)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=ROOT / "target/release/examples/serve")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("server_args", nargs="*", help="extra flags for the server (after --)")
    args = parser.parse_args()

    png_bytes = (ROOT / "data/sample_frame.png").read_bytes()
    frame = np.array(Image.open(ROOT / "data/sample_frame.png").convert("RGB"), dtype=np.uint8)
    proc, url = start_server(args.binary, args.server_args)
    try:
        check_protocol(url, frame, png_bytes)
        with requests.Session() as session:
            report("keep-alive session", measure(url, frame, args.requests, session))
            # The floor of HTTP through `requests` here: a route that does no work.
            health = []
            for _ in range(args.requests):
                start = time.perf_counter()
                session.get(f"{url}/health").content
                health.append((time.perf_counter() - start) * 1e3)
            print(
                f"GET /health round trip (keep-alive): median {statistics.median(health):.3f} ms, "
                f"p90 {percentile(health, 0.9):.3f} ms"
            )
        report("new connection per request", measure(url, frame, args.requests, None))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    stderr = proc.stderr.read()
    if code != 0 or "stopped" not in stderr:
        raise SystemExit(f"unclean shutdown (exit {code}): {stderr}")
    print("shutdown on SIGINT: clean")


if __name__ == "__main__":
    sys.exit(main())
