"""Chunked request bodies as production reads them: the receiver started with the command reach_cli/processes.py
writes (as tests/test_deploy.py does), over raw sockets.

The server, not the app, parses the chunk framing: a bad chunk size or a body cut short ends the body early
(granian's RSGI body stream, answered by the async front; under gunicorn it was an exception from
`wsgi.input`), so only the real server shows what production answers. The Flask test client never dechunks.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reach_cli import processes
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import ServiceProcess, free_port

MALFORMED = {"error": "malformed chunked body"}
#: A body whose happy answer writes nothing: a dry run of a cycle is a 200 with counts.
DRY_RUN = b'{"message":"hi","dry_run":true}'


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes  # anything the server wrote after this answer on the same connection

    def json(self) -> object:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def gunicorn(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ServiceProcess]]:
    """The receiver as production runs it (one worker: what is tested is the worker, not their number)."""
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("gunicorn")
    web = ServiceProcess(workdir, "web", processes.receiver(f"127.0.0.1:{port}", workers=1), ready=b"Started worker")
    try:
        wait_for(lambda: _healthy(port), timeout=30, what="the receiver answering /healthz")
        yield port, web
    finally:
        web.stop()
    assert "Traceback" not in web.log(), web.log()[-3000:]


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def exchange(port: int, head: bytes, body: bytes, end: bool = True) -> Answer:
    """Send a request as raw bytes and read the answer. With `end`, stop sending (so a body cut short ends) and
    read until the server closes; without, read the one answer (granian, like hyper, closes a connection whose
    client stopped sending without answering a request it had whole: real clients never half-close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if end:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while not _whole(received) or end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head_part, _, after = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", len(after)))
    return Answer(int(status_line.split()[1]), headers, after[:length], after[length:])


def _whole(received: bytes) -> bool:
    """Whether `received` holds an answer's head and the body its Content-Length announces."""
    head, found, after = received.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [line.partition(b":")[2] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return len(after) >= int(lengths[0]) if lengths else False


def request_head(path: str, content_type: str, headers: dict[str, str], length: int | None = None) -> bytes:
    """A POST's request line and headers; chunked unless `length` is given."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"POST {path} HTTP/1.1", "Host: reach", f"Content-Type: {content_type}", framing]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}
#: Every POST route that reads its body, with what it needs to get that far.
READERS = [
    ("/api/cycles", "application/json", OPERATOR),
    ("/api/contacts", "text/csv", OPERATOR),
    ("/api/schedules", "application/json", OPERATOR),
    (f"/communicate?token={WEBHOOK_TOKEN}", "application/json", {}),
    (f"/ussd?token={WEBHOOK_TOKEN}", "application/x-www-form-urlencoded", {}),
    (f"/voice?token={WEBHOOK_TOKEN}", "application/x-www-form-urlencoded", {}),
    (f"/dlr?token={WEBHOOK_TOKEN}", "application/x-www-form-urlencoded", {}),
    (f"/receiveSMS?token={WEBHOOK_TOKEN}", "application/json", {}),
    ("/dashboard/login", "application/x-www-form-urlencoded", {"Origin": "http://reach"}),  # its own origin
]
FRAMINGS = {
    "size not hex": b"zz\r\nabc\r\n0\r\n\r\n",
    "negative size": b"-1\r\nabc\r\n0\r\n\r\n",
    "no CRLF after the data": b"2\r\n{}XX0\r\n\r\n",
    "cut short in a chunk": b"40\r\nabc",
    "no last chunk": b"3\r\nabc\r\n",
    "huge size, cut short": b"ffffffffffffffffffff\r\nabc",
    "bad trailer": b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n",
}


@pytest.mark.parametrize(("path", "content_type", "headers"), READERS, ids=[r[0].partition("?")[0] for r in READERS])
def test_a_malformed_chunked_body_is_a_400_on_every_route_that_reads_one(
    gunicorn: tuple[int, ServiceProcess], clean: None, path: str, content_type: str, headers: dict[str, str]
) -> None:
    """Was a 500 and an `unhandled error` traceback (gunicorn's InvalidChunkSize is not an OSError)."""
    port, web = gunicorn
    for name, framing in FRAMINGS.items():
        answer = exchange(port, request_head(path, content_type, headers), framing)
        assert (answer.status, answer.json()) == (400, MALFORMED), name
        assert answer.rest == b"", name  # the server closed: it parses no request from what followed
    assert "unhandled error" not in web.log()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/cycles", "application/json", DRY_RUN),
        (f"/dlr?token={WEBHOOK_TOKEN}", "application/x-www-form-urlencoded", b"id=ATXid_1&status=Success"),
    ],
    ids=["operator", "fast path"],
)
def test_a_body_shorter_than_its_content_length_is_a_400_naming_it(
    gunicorn: tuple[int, ServiceProcess], clean: None, path: str, content_type: str, body: bytes
) -> None:
    """gunicorn hands the app such a body as if it were whole: both were answered as if it were."""
    port, _ = gunicorn
    answer = exchange(port, request_head(path, content_type, OPERATOR, length=len(body) + 50), body)
    assert (answer.status, answer.json()) == (400, {"error": "request body ended before its declared length"})


def test_a_well_framed_chunked_body_is_read_as_sent(gunicorn: tuple[int, ServiceProcess], clean: None) -> None:
    port, _ = gunicorn
    framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (DRY_RUN[:7], DRY_RUN[7:])) + b"0\r\n\r\n"
    answer = exchange(port, request_head("/api/cycles", "application/json", OPERATOR), framed, end=False)
    assert answer.status == 200 and {"sms", "voice", "skipped"} <= set(answer.json())  # type: ignore[arg-type]


def test_a_chunk_extension_is_skipped_whatever_it_holds(gunicorn: tuple[int, ServiceProcess], clean: None) -> None:
    """The server's parser skips chunk extensions without reading them (RFC 9112 §7.1.1 lets a recipient
    ignore them), so one with a control character is no error: the body is read as its data."""
    port, _ = gunicorn
    framed = b"%x;\x01\r\n%s\r\n0\r\n\r\n" % (len(DRY_RUN), DRY_RUN)
    answer = exchange(port, request_head("/api/cycles", "application/json", OPERATOR), framed, end=False)
    assert answer.status == 200


# -- fuzz: random chunk framings -------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Ways to break a framing; None keeps it valid.
MUTATIONS = [None, "size+1", "size-1", "size as decimal junk", "drop CRLF", "drop last chunk", "lf only", "cut"]


@st.composite
def framings(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """DRY_RUN split into chunks at random places, with valid extensions and trailers sometimes, and at most
    one mutation; returns the bytes, whether they are a valid framing, and whether they end in trailer fields."""
    cuts = sorted(draw(st.sets(st.integers(1, len(DRY_RUN) - 1), max_size=6)))
    parts = [DRY_RUN[a:b] for a, b in zip([0, *cuts], [*cuts, len(DRY_RUN)], strict=True)]
    sizes = [draw(st.sampled_from(["%x", "%X", "%04x"])) % len(part) for part in parts]
    extensions = [draw(st.sampled_from(["", ";a=1", ';name="v"'])) for _ in parts]
    trailer = draw(st.sampled_from(["", "X-Trailer: 1\r\n"]))
    mutation, at = draw(st.sampled_from(MUTATIONS)), draw(st.integers(0, len(parts) - 1))
    crlf = ["\r\n"] * len(parts)
    if mutation == "size+1":
        sizes[at] = "%x" % (len(parts[at]) + 1)
    elif mutation == "size-1":
        sizes[at] = "%x" % (len(parts[at]) - 1) if len(parts[at]) > 1 else "g"
    elif mutation == "size as decimal junk":
        sizes[at] = draw(st.sampled_from(["-1", "0x5", "5.0", " ", "1_0", "+5"]))
    elif mutation == "drop CRLF":
        crlf[at] = ""
    elif mutation == "lf only":
        crlf[at] = "\n"
    framed = b"".join(
        f"{size}{ext}\r\n".encode() + part + end.encode()
        for size, ext, part, end in zip(sizes, extensions, parts, crlf, strict=True)
    )
    if mutation != "drop last chunk":
        framed += f"0\r\n{trailer}\r\n".encode()
    if mutation == "cut":
        framed = framed[: draw(st.integers(0, len(framed) - 1))]
    return framed, mutation is None, bool(trailer)


@FUZZ
@given(framing=framings())
def test_random_chunk_framings_are_read_or_refused_never_a_server_error(
    gunicorn: tuple[int, ServiceProcess], framing: tuple[bytes, bool, bool]
) -> None:
    """A valid framing is read whole, but one with trailer fields: granian's RSGI hands a trailer over as it
    hands a break (web/front_bodies.py), so such a body is refused as broken, never taken whole when cut."""
    port, web = gunicorn
    framed, valid, trailer = framing
    event("valid framing" if valid else "broken framing")
    answer = exchange(port, request_head("/api/cycles", "application/json", OPERATOR), framed, end=not valid)
    if valid and not trailer:
        assert answer.status == 200, (framed, answer)
    else:
        assert answer.status == 400, (framed, answer)  # the framing, or the JSON it spelled, named
    assert "unhandled error" not in web.log()
