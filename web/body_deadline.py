"""The deadline on each request body, so a client that trickles one cannot hold the receiver (issue 12).

From the first read, a body has BODY_TIMEOUT_SECONDS to arrive, plus a second for every MIN_RATE bytes it has
delivered: a large upload (the operator API takes up to 32 MiB) is not cut off for being large, only for
arriving slower than MIN_RATE, while a trickle earns next to nothing. The receiver's async front reads every
body under it on its event loop (web/front_bodies.py); a body still missing at the deadline reaches Flask as a
`wsgi.input` raising `BodyTooSlow` where the rest would be, which Flask answers 408 (web/errors.py), and the
connection is closed after the answer. A request's line and headers are granian's to bound (web/serve.py).
Elsewhere (the tests' threaded server, the Flask test client) reads are left as they are.
"""

from __future__ import annotations

import logging

from werkzeug.exceptions import RequestTimeout

log = logging.getLogger(__name__)


class BodyTooSlow(RequestTimeout):
    """The body did not arrive in time: 408."""


#: Bytes a second a body must keep up beyond BODY_TIMEOUT_SECONDS (512 kbit/s).
MIN_RATE = 64 * 1024


def too_slow_message(seconds: float) -> str:
    return f"request body too slow: {seconds:g} s allowed, then 1 s per 64 KiB"
