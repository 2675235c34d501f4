"""A real webhook receiver on loopback, for the notification tests (``receiver`` fixture)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """A webhook receiver: records each body; answers from ``script`` (status codes, or
    ``"hang"`` to answer only after ``hang_s``), then 200."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)
    hang_s: float = 3.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: threading.Event = field(default_factory=threading.Event)

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else 200


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    """A started receiver on a free port; stopped on exit."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            answer = state.next_answer()
            if answer == "hang":
                time.sleep(state.hang_s)
                answer = 200
            with state.lock:
                state.bodies.append(body)
            try:
                self.send_response(int(answer))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up waiting (the timeout tests)
            state.received.set()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/secret-token"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
