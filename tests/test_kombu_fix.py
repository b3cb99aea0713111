"""shared/kombu_fix.py: a kombu Redis channel whose connection closed fails with a connection error (which
Celery and kombu ignore or log), not AttributeError (which stopped the worker), and keeps what it delivered.
tests/test_broker_loss.py is the whole story with a real worker and Redis killed."""

from __future__ import annotations

import uuid

import kombu
import pytest
import redis
from kombu import Connection

from shared import kombu_fix


def test_the_fix_was_written_for_the_installed_kombu() -> None:
    assert kombu.__version__ == kombu_fix.FOR_KOMBU, (
        "kombu was upgraded: run tests/test_broker_loss.py without shared.kombu_fix.apply() to see whether the "
        "new kombu still needs it; then set FOR_KOMBU, or remove the fix"
    )


def test_a_channel_whose_connection_closed_raises_a_connection_error_and_keeps_its_message(redis_url: str) -> None:
    kombu_fix.apply()
    prefix = f"test:kombu-fix:{uuid.uuid4().hex}"
    options = {"unacked_key": f"{prefix}:unacked", "unacked_index_key": f"{prefix}:unacked_index"}
    store = redis.Redis.from_url(redis_url)
    connection = Connection(redis_url, transport_options=options)
    try:
        queue = connection.SimpleQueue(prefix)
        queue.put({"task": "in flight"})
        message = queue.get(timeout=5)  # delivered, not acknowledged: acks_late's task in flight
        connection_errors = connection.connection_errors
        # What Connection.collect() leaves when the channel's close failed (Redis gone): the transport detached.
        connection._do_close_transport()
        with pytest.raises(connection_errors):
            message.channel.close()  # puts the unacknowledged message back: kombu 5.7 raised AttributeError
        with pytest.raises(connection_errors):
            message.ack()  # a task that finished after the loss
        assert store.hexists(options["unacked_key"], message.delivery_tag), "the message left the unacked hash"
    finally:
        connection.release()
        store.delete(prefix, *options.values())
        store.close()
