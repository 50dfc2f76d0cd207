"""A tiny OpenAI-compatible /v1/completions stand-in (stdlib), for serve-benchmark tests.

It "decodes" exactly ``max_tokens`` tokens per request, sleeping ``token_s`` per token, and
records the payloads and the peak number of requests in flight.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn:
    def __init__(self, token_s: float = 0.0005, model: str = "standin-model") -> None:
        self.token_s = token_s
        self.model = model
        self.payloads: list[dict] = []
        self.inflight = 0
        self.peaks: list[int] = []  # peak concurrency observed by each request while running
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": outer.model}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path != "/v1/completions":
                    self._send(404, {"error": "not found"})
                    return
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n = int(payload["max_tokens"])
                with outer._lock:
                    outer.payloads.append(payload)
                    outer.inflight += 1
                    peak = outer.inflight
                time.sleep(n * outer.token_s)
                with outer._lock:
                    peak = max(peak, outer.inflight)
                    outer.peaks.append(peak)
                    outer.inflight -= 1
                prompt = payload["prompt"]
                self._send(
                    200,
                    {
                        "id": "cmpl-standin",
                        "object": "text_completion",
                        "model": outer.model,
                        "choices": [{"index": 0, "text": " x" * n, "finish_reason": "length"}],
                        "usage": {
                            "prompt_tokens": len(prompt),
                            "completion_tokens": n,
                            "total_tokens": len(prompt) + n,
                        },
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
