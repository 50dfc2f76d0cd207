"""A stand-in OpenAI-style server for supervisor and capture tests (stdlib only).

Serves /health (after --ready-after seconds), /v1/models and /v1/completions; each completion
request is appended as one JSON line to --record. Options to crash, ignore SIGTERM and spawn a
worker in the same process group exercise the supervisor.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ready-after", type=float, default=0.0)
    ap.add_argument("--crash-after", type=float, default=None)
    ap.add_argument("--exit-code", type=int, default=3)
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--spawn-worker", action="store_true")
    ap.add_argument("--record", default=None)
    ap.add_argument("--model-name", default="standin")
    ap.add_argument("--dump-dir", default=None, help="write an msit-like folder per request")
    ap.add_argument(
        "--synthetic-msit-tp",
        type=int,
        default=0,
        help="write the dumps package's synthetic msit dump (seeded, labelled synthetic) for this TP",
    )
    args = ap.parse_args()
    started = time.monotonic()

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    if args.spawn_worker:
        # Same process group (no new session): the supervisor must stop it too.
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"worker pid {worker.pid}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            print("request:", fmt % a, flush=True)

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                ok = time.monotonic() - started >= args.ready_after
                self._send(200 if ok else 503, {})
            elif self.path == "/v1/models":
                self._send(
                    200, {"object": "list", "data": [{"id": args.model_name, "object": "model"}]}
                )
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if args.record:
                with open(args.record, "a") as fh:
                    fh.write(json.dumps(body) + "\n")
            if args.dump_dir and args.synthetic_msit_tp:
                sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
                from studio_backend.dumps.synthetic import SynthConfig, make_truth, write_msit

                cfg = SynthConfig()
                truth = make_truth(cfg, [5] + [1] * (int(body.get("max_tokens", 1)) - 1), seed=0)
                write_msit(Path(args.dump_dir), cfg, truth, args.synthetic_msit_tp)
            elif args.dump_dir:
                step = os.path.join(
                    args.dump_dir,
                    f"msit_dump_{os.getpid()}",
                    "torch_tensors",
                    "cpu_0",
                    str(self.server.steps),
                )
                self.server.steps += 1
                os.makedirs(step, exist_ok=True)
            text = " done" * int(body.get("max_tokens", 1))
            self._send(
                200,
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                    "usage": {
                        "prompt_tokens": len(body["prompt"])
                        if isinstance(body["prompt"], list)
                        else -1,
                        "completion_tokens": int(body.get("max_tokens", 1)),
                    },
                },
            )

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.steps = 0
    print(f"stand-in serving on {args.host}:{args.port} pid {os.getpid()}", flush=True)
    if args.crash_after is not None:

        def crash() -> None:
            time.sleep(args.crash_after)
            print("fatal: simulated failure in the model runner", flush=True)
            os._exit(args.exit_code)

        threading.Thread(target=crash, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
