#!/usr/bin/env python3
"""Instructions per relayed request, counted by valgrind's callgrind.

CPU time per request on two shared cores moves by a fifth from run to run
(other processes, frequency, cache); an instruction count does not. This
runs each given weir binary under `valgrind --tool=callgrind` in front of a
local fake OpenAI provider (16 content chunks, a finish chunk, the usage
chunk when asked, `[DONE]`: the same answer as `weir-load proxy`), sends
`--warmup` streamed `upstream/fake` completions over one keep-alive
connection, zeroes the counters (`callgrind_control -z`), sends `--requests`
more and dumps (`callgrind_control -d`); then counts an idle window of the
same length the same way, and prints (busy - idle) / requests: the
instructions per request, without what timers and background loops spend
in the (valgrind-slowed) time the requests took. Each binary is measured `--rounds` times, taking turns.

  python3 loadtest/callgrind_relay.py --json loadtest/results/relay_instructions.json \
      BIN [BIN ...] [nginx]

`nginx` (the word) measures nginx the same way, as `weir-load proxy
--nginx` sets it up for SSE (keep-alive upstream, no buffering, no access
log), in one process (`master_process off`) so that one count holds it.

Needs valgrind (callgrind_control comes with it). The provider and the
client are this script's, in Python; only the gateway runs under valgrind.
"""

import argparse
import glob
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNKS = 16


def answer(usage: bool) -> bytes:
    def chunk(delta, finish):
        v = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
             "model": "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(v, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": "tok0 "} if i == 0 else {"content": f"tok{i} "}, None)
           for i in range(CHUNKS)]
    out.append(chunk({}, "stop"))
    if usage:
        u = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": CHUNKS,
                                      "total_tokens": 3 + CHUNKS}}
        out.append(b"data: " + json.dumps(u, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


class Provider(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        data = answer(bool((body.get("stream_options") or {}).get("include_usage")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc, secs=120):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited: {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("gateway not healthy")


def send(conn, key: str, n: int):
    body = json.dumps({"model": "upstream/fake", "stream": True,
                       "messages": [{"role": "user", "content": "hello"}]})
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200 or not data.endswith(b"data: [DONE]\n\n"):
            raise SystemExit(f"bad answer {r.status}: {data[:200]!r}")


def total_ir(path: str) -> int:
    for line in open(path):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


NGINX_CONF = """pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
master_process off;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    keepalive_requests 1000000;
    upstream provider {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200; }}
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            tcp_nodelay on;
        }}
    }}
}}
"""


def start(binary: str, tmp: str, provider_port: int, out: str):
    """The target under callgrind: its process, port and key."""
    port = free_port()
    cg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if binary == "nginx":
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=tmp, upstream=provider_port, port=port))
        nginx = next(p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p))
        proc = subprocess.Popen(cg + [nginx, "-p", tmp, "-e", os.path.join(tmp, "error.log"),
                                      "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        return proc, port, "none"
    data = os.path.join(tmp, "data")
    key = subprocess.run([binary, "keys", "create", "--scopes", "*", "--rpm", "1000000",
                          "--data-dir", data], check=True, capture_output=True,
                         text=True).stdout.strip()
    proc = subprocess.Popen(
        cg + [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
              "--provider-url", f"http://127.0.0.1:{provider_port}/v1"],
        # An environment variable, not a flag: builds from before
        # rolling restarts (issue 21) do not know it.
        env={**os.environ, "WEIR_DRAIN_DELAY_SECS": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port, key


def measure(binary: str, provider_port: int, warmup: int, requests: int, keep=None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc, port, key = start(binary, tmp, provider_port, out)
        try:
            wait_healthy(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            send(conn, key, warmup)

            def window(work):
                """Instructions from a zeroed count to a dump around `work`."""
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                               capture_output=True)
                before = set(glob.glob(out + ".*"))
                t = time.monotonic()
                work()
                took = time.monotonic() - t
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                               capture_output=True)
                dump = (set(glob.glob(out + ".*")) - before).pop()
                return total_ir(dump), took, dump

            busy, took, dump = window(lambda: send(conn, key, requests))
            # The same time with no request: what the gateway's timers and
            # background loops (webhook claims, sweeps) spend per second,
            # which valgrind's slowness would otherwise charge to requests.
            idle, _, _ = window(lambda: time.sleep(took))
            conn.close()
            if keep:
                os.makedirs(keep, exist_ok=True)
                name = os.path.basename(binary) + f"-{int(time.time())}.callgrind"
                subprocess.run(["cp", dump, os.path.join(keep, name)], check=True)
            return (busy - idle) // requests
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--keep", help="copy each window's callgrind dump into this folder "
                    "(for callgrind_annotate)")
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = {b: [] for b in a.binaries}
    for r in range(a.rounds):
        for b in a.binaries:
            ir = measure(b, server.server_address[1], a.warmup, a.requests, a.keep)
            results[b].append(ir)
            print(f"round {r + 1} {b}: {ir} instructions per request", flush=True)
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                                text=True).stdout.strip())
    # The shape of weir-load's results files (loadtest/README.md), one
    # report in an array, so that `weir-load report` reads it like theirs.
    report = [{"scenario": "relay-instructions",
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "git": {"commit": git or None, "dirty": dirty}, "weir": a.binaries,
               "command": " ".join(sys.argv),
               "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
               "load_average": None,
               "data": {"chunks": CHUNKS, "warmup": a.warmup, "requests": a.requests,
                        "instructions_per_request": results},
               "checks": []}]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    for b, v in results.items():
        print(f"{b}: median {sorted(v)[len(v) // 2]} ({min(v)}-{max(v)})")


if __name__ == "__main__":
    main()
