"""The receiver's gunicorn worker class: gunicorn's gevent worker, writing each response's head and body in one
`send`.

gunicorn writes a response's status line and headers with one `sendall` and its body with another. On this
kind of machine a `send` on loopback is one of the dearest things a request does (it runs the client's side
of TCP in the sender's time): py-spy of a gevent worker under wrk had 24 % of its wall-clock samples in the
head's send and 6 % in the body's (bench/RESULTS.md, section 1, round 3). Here the first write of a
response (its head) is held until the next one (its body) and both go out together; anything else asked of
the socket, and the end of the request, send a held head first, so a response without a body, an error page
or a streamed answer goes out exactly as before, only the bytes of head and first body part share a `send`.

`--worker-class web.gunicorn_worker.GeventWorker`: imported by gunicorn's master, like gunicorn's own gevent
worker class, so it imports nothing of the app (web/__init__.py).
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker


class HeldHead:
    """A client socket whose first `sendall` is held and sent with the second."""

    __slots__ = ("_head", "_sock", "_written")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._head: bytes | None = None
        self._written = False  # the first write was seen (held or sent)

    def sendall(self, data: bytes, *flags: int) -> None:
        if not self._written:
            self._written = True
            self._head = bytes(data)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._sock.sendall(data, *flags)

    def flush(self) -> None:
        """Send a held head now."""
        if self._head is not None:
            head, self._head = self._head, None
            self._sock.sendall(head)

    def __getattr__(self, name: str) -> Any:
        # Anything else (sendfile's fileno, shutdown, close, send): the head goes first, in order.
        self.flush()
        return getattr(self._sock, name)


class GeventWorker(_GunicornGeventWorker):
    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        out = HeldHead(sock)
        try:
            return super().handle_request(listener_name, req, out, addr)
        finally:
            out.flush()  # a response of head only (no body, or an empty one) ends here
