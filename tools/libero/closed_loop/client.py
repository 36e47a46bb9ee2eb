"""The policy server from the client side: one keep-alive HTTP connection, the json-numpy image encoding,
the server's setup from /info, and spawning / stopping the server binary (--spawn)."""
import base64
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

from generate import IMG, log


class ServerError(RuntimeError):
    pass


class Client:
    """One keep-alive HTTP connection (standard library only)."""

    def __init__(self, base, timeout=600):
        u = urllib.parse.urlsplit(base)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--server {base!r}: expected http://HOST:PORT")
        self.base, self.host, self.port, self.timeout = base, u.hostname, u.port or 80, timeout
        self.conn = None
        self.retries = 0

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                # a keep-alive connection the server closed: retry once on a new one
                self.close()
                if attempt:
                    raise ServerError(f"{method} {self.base}{path}: {type(exc).__name__}: {exc}") from exc
                self.retries += 1
            except OSError as exc:
                self.close()
                raise ServerError(f"{method} {self.base}{path}: {type(exc).__name__}: {exc}") from exc
        try:
            ans = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ServerError(f"{method} {path}: status {resp.status}, not JSON: {raw[:200]!r}") from exc
        if resp.status != 200:
            err = ans.get("error", {}) if isinstance(ans, dict) else {}
            raise ServerError(f"{method} {path}: status {resp.status} {err.get('kind')}: {err.get('message')}")
        return ans

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def image_field(img):
    """json-numpy encoding of a uint8 HxWx3 array, as OpenVLA's client sends it."""
    import numpy as np
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return {"__numpy__": base64.b64encode(img.tobytes()).decode("ascii"), "dtype": "|u1", "shape": list(img.shape)}


class SpawnedServer:
    """target/release/examples/serve --port 0 run in `cwd` (the repository root), its output in a log file;
    stopped with SIGTERM."""

    def __init__(self, binary, extra_args, log_path, cwd, start_timeout=900):
        if not os.path.exists(binary):
            sys.exit(f"eval.py: --spawn: {binary} not found; build it: cargo build --release --example serve")
        cmd = [binary, "--port", "0", *extra_args]
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self.log = open(log_path, "a")
        self.log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        self.log.flush()
        # its own session: a Ctrl-C reaches eval.py only, which then stops the server after the last answer
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, start_new_session=True)
        lines = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self.log.write(line)
                self.log.flush()
                lines.put(line)
            lines.put(None)

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        deadline = time.time() + start_timeout
        self.url = None
        while self.url is None:
            try:
                line = lines.get(timeout=max(deadline - time.time(), 0.1))
            except queue.Empty:
                self.stop()
                sys.exit(f"eval.py: the server printed no `listening on` line in {start_timeout} s (see {log_path})")
            if line is None:
                code = self.proc.wait()
                sys.exit(f"eval.py: the server exited with status {code} before listening (see {log_path})")
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/")
        log(f"spawned server pid {self.proc.pid} at {self.url} (log {log_path})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # the server's last lines (its shutdown report) are still being copied: let the copier finish first
        self.pump.join(timeout=10)
        self.log.close()


def server_setup(info):
    """The /info fields a results line records and a resumed run must match (model and draft head with their
    folders' checksums, drafter)."""
    return {k: info.get(k) for k in ("model", "model_fingerprint", "draft_head", "draft_head_fingerprint", "drafter",
                                     "device", "dtype", "version", "default_decoder")}


def unnorm_keys(info, suites):
    """Suite -> unnorm key: <suite> if the server has it, else <suite>_no_noops (OpenVLA's rule)."""
    keys = info.get("unnorm_keys") or []
    unnorm = {}
    for s in suites:
        if s in keys:
            unnorm[s] = s
        elif f"{s}_no_noops" in keys:
            unnorm[s] = f"{s}_no_noops"
        else:
            sys.exit(f"eval.py: the server has no unnorm key for {s} (has {keys})")
    return unnorm


def probe_decoders(client, decoders, fields, unnorm_key):
    """Each decoder once on a grey frame (no episode): a bad decoder fails here, not hours in."""
    import numpy as np
    probe = np.full((IMG, IMG, 3), 127, dtype=np.uint8)
    for d in decoders:
        client.request("POST", "/act", {"image": image_field(probe), "instruction": "pick up the bowl",
                                        "unnorm_key": unnorm_key, "decoder": fields[d]})
