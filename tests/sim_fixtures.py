"""Helpers for tests that run the AT simulator: a callback receiver and simulator-backed settings.

Plain functions and classes, not fixtures: each test module wraps them in its own small fixtures.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from shared.settings import Settings, load_settings
from simulator import SimulatorServer

#: A key no other string in the test run contains, so a leak is unambiguous.
SIM_KEY = "atsk_ReachTestKey_7f3c9a1e5d2b8046"
AT_NUMBER = "+254711082000"

SAY_XML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="woman">Hello from Reach</Say></Response>'
ASK_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><GetDigits numDigits="1" timeout="10">'
    "<Say>Press 1 to confirm</Say></GetDigits></Response>"
)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Receiver:
    """A stand-in for Reach's callback endpoints: records every post; answers /voice with XML."""

    def __init__(self) -> None:
        self.ask_digits = False  # answer the first voice post with <GetDigits>
        self.fail_first = 0  # answer this many posts with 500 before accepting
        self.voice_xml: str | None = None  # answer every live voice post with this instead
        self._lock = threading.Lock()
        self._posts: list[dict[str, Any]] = []
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def posts(self, path: str | None = None) -> list[dict[str, Any]]:
        """Posts received so far (including those answered 500), optionally to one path."""
        with self._lock:
            return [dict(p) for p in self._posts if path is None or p["path"] == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        post = {
            "path": request.path,
            "args": request.args.to_dict(),
            "form": request.form.to_dict(),
            "content_type": request.content_type,
            "time": time.monotonic(),
        }
        with self._lock:
            self._posts.append(post)
            failing = len(self._posts) <= self.fail_first
        if failing:
            return Response("boom", status=500)(environ, start_response)
        body = ""
        if request.path == "/voice":
            asked = self.ask_digits and "dtmfDigits" not in post["form"]
            body = ASK_XML if asked else SAY_XML
            if self.voice_xml is not None and post["form"].get("isActive") == "1":
                body = self.voice_xml
        return Response(body, status=200, content_type="application/xml")(environ, start_response)


def sim_settings(sim: SimulatorServer | None = None, **overrides: Any) -> Settings:
    """Settings that point the AT client at `sim` (or at whatever URLs `overrides` give)."""
    values: dict[str, Any] = {
        "at_username": "sandbox",
        "at_api_key": SIM_KEY,
        "at_sender_id": "",
        "at_voice_number": AT_NUMBER,
        "at_timeout_connect": 2.0,
        "at_timeout_read": 5.0,
    }
    if sim is not None:
        values.update(at_sms_url=f"{sim.url}/version1", at_voice_url=sim.url)
    values.update(overrides)
    return load_settings(**values)


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
