"""A kombu 5.7.0 Redis channel whose broker connection was closed fails with a connection error, not
AttributeError, so a Celery worker that loses Redis with a task in flight reconnects instead of stopping.

Celery 5.7 handles a lost broker connection by `Connection.collect()` (which closes the channels and then
detaches the transport: `transport.client = None`) followed by `Connection.close()`. A channel that waited on
BRPOP when Redis went away fails its first close (it reads the BRPOP reply first, from a dead socket), so the
second close does it all again, and closing a channel puts its unacknowledged messages back (`task_acks_late`:
every task in flight). kombu's Redis channel builds a connection pool for that from `self.connection.client`,
None by now: `AttributeError: 'NoneType' object has no attribute 'hostname'` in `Channel._connparams`. Celery
and kombu ignore only connection errors there, so the worker logged "Unrecoverable error" and stopped for good
(tests/test_broker_loss.py). A late ack of a task that finished after the loss took the same path, and so does
any use of a channel after its connection closed.

With the patch the channel raises redis's ConnectionError there instead, what it raises when Redis is down,
which those callers ignore or log ("Couldn't ack"). Nothing is dropped: a message kombu delivers is also kept in
its unacknowledged hash in Redis until acknowledged, and from there the visibility timeout
(shared.broker.VISIBILITY_TIMEOUT) puts it back in its queue. tests/test_kombu_fix.py pins the kombu version it
was written for: on an upgrade, run tests/test_broker_loss.py without it to see whether it is still needed.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

#: The kombu release this patch was written for and checked against.
FOR_KOMBU = "5.7.0"


def apply() -> None:
    """Patch `kombu.transport.redis.Channel._connparams` once per process (idempotent)."""
    original = kombu_redis.Channel._connparams
    if getattr(original, "reach_fix", False):
        return

    @functools.wraps(original)
    def _connparams(self: kombu_redis.Channel, asynchronous: bool = False) -> dict[str, Any]:
        # `self.connection` is the channel's transport: None once the channel closed, and its `client` (the
        # kombu Connection) None once that connection closed.
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel is closed")
        return original(self, asynchronous=asynchronous)

    _connparams.reach_fix = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams
