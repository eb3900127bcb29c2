"""A real HTTP server on 127.0.0.1 standing in for a customer's webhook receiver: it
records each POST, answers as a test scripts it, and verifies signatures with the
``standardwebhooks`` library, as a receiver would."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before answering (a slow receiver)
    hold: threading.Event | None = None  # answer only once this is set (a hung one)


@dataclasses.dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature verifies with ``secret`` (else it raises)."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []  # answers in order; 200 once it runs out
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                    answer = receiver.script.pop(0) if receiver.script else Answer()
                if answer.hold is not None:
                    answer.hold.wait(60)
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tally-events"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def payloads(self, secret: str) -> list[dict[str, Any]]:
        """Every payload received, each verified; one per ``webhook-id`` (a receiver
        drops repeats), in the order they arrived."""
        seen: set[str] = set()
        payloads = []
        for request in list(self.received):
            payload = request.verify(secret)
            if request.id not in seen:
                seen.add(request.id)
                payloads.append(payload)
        return payloads

    def types(self, secret: str) -> list[str]:
        return [payload["type"] for payload in self.payloads(secret)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()
