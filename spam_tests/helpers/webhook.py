"""A real HTTP receiver on 127.0.0.1 for the alert tests: answers a scripted list of status
codes (then 200) and records every JSON body it got."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.bodies: list[dict] = []
        self.attempts = 0
        self.url = ""


@contextlib.contextmanager
def webhook(statuses: list[int] | None = None, delay_s: float = 0.0) -> Iterator[Receiver]:
    receiver = Receiver(statuses or [], delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.attempts += 1
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(receiver.delay_s)
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            if status == 200:
                receiver.bodies.append(json.loads(body))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"try later")

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
