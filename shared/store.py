"""Where Reach keeps what is not a database record: the callback inbox, live voice scripts, send rates.

Production keeps them in Redis (`shared.inbox`, `shared.voice_script`, `shared.ratelimit`); the embedded
mode (no REDIS_URL) keeps them in the database (`shared.sql_store`). `store_for()` is the one place that
chooses, from the settings; everything else talks to a `Store` and catches `STORE_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Protocol

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from shared import ratelimit, sql_store, voice_script
from shared.inbox import Batch, DeadLetter, Inbox, InboxItem
from shared.settings import Settings

#: What a store raises when it cannot do its job (Redis down, database locked or down).
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, SQLAlchemyError)


class CallbackInbox(Protocol):
    """The reliable callback queue (see `shared.inbox` for the contract both implementations keep)."""

    def push(self, kind: str, data: dict[str, str]) -> str: ...
    def nudge(self) -> None: ...
    def claim(self, limit: int) -> Batch | None: ...
    def ack(self, batch: Batch) -> None: ...
    def release(self, batch_key: str) -> int: ...
    def recover_stale(self, stale_after: float) -> int: ...
    def dead_letter(self, batch: Batch, item: InboxItem, reason: str = "") -> None: ...
    def dead_letters(self) -> list[DeadLetter]: ...
    def replay(self, ids: Collection[str] | None = None) -> int: ...
    def mark_idle(self) -> None: ...
    def keep_awake(self, seconds: float) -> None: ...
    def hold_linger(self, token: str, seconds: float) -> bool: ...
    def release_linger(self, token: str) -> None: ...
    def lingering_elsewhere(self, token: str) -> bool: ...
    def depth(self) -> int: ...
    def in_flight(self) -> int: ...
    def oldest_received_at(self) -> datetime | None: ...


class Store(Protocol):
    name: str

    def inbox(self, wake: Callable[[], None] | None = None) -> CallbackInbox: ...
    def remember_script(self, message: str, *, phone: str, session_id: str) -> None: ...
    def lookup_script(self, *, session_id: str, phone: str) -> str | None: ...
    def acquire_rate(self, name: str, count: int, per_second: float) -> float: ...
    def mark(self, key: str, seconds: float) -> None: ...
    def is_marked(self, key: str) -> bool: ...
    def unmark(self, key: str) -> None: ...
    def add_holder(self, key: str, seconds: float) -> None: ...
    def remove_holder(self, key: str) -> None: ...
    def ping(self) -> bool: ...
    def housekeeping(self) -> None: ...
    def close(self) -> None: ...


# The last holder gone (or the mark lapsed meanwhile), the mark goes: a count never stays at or below zero.
_REMOVE_HOLDER = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
"""


class RedisStore:
    """Production: the Redis implementations, unchanged."""

    name = "redis"

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def inbox(self, wake: Callable[[], None] | None = None) -> Inbox:
        return Inbox(self.redis, wake=wake)

    def remember_script(self, message: str, *, phone: str, session_id: str) -> None:
        voice_script.remember(self.redis, message, phone=phone, session_id=session_id)

    def lookup_script(self, *, session_id: str, phone: str) -> str | None:
        return voice_script.lookup(self.redis, session_id=session_id, phone=phone)

    def acquire_rate(self, name: str, count: int, per_second: float) -> float:
        return ratelimit.acquire(self.redis, name, count, per_second)

    def mark(self, key: str, seconds: float) -> None:
        """A flag that lapses by itself after `seconds`."""
        self.redis.set(key, 1, px=max(1, int(seconds * 1000)))

    def is_marked(self, key: str) -> bool:
        return bool(self.redis.exists(key))

    def unmark(self, key: str) -> None:
        """Delete the key (a mark, or a voice script an erasure removes)."""
        self.redis.delete(key)

    def add_holder(self, key: str, seconds: float) -> None:
        """A mark held by several at once (`is_marked` until the last `remove_holder`); all of it lapses by itself
        `seconds` after the newest holder came."""
        with self.redis.pipeline() as pipe:
            pipe.incr(key).pexpire(key, max(1, int(seconds * 1000))).execute()

    def remove_holder(self, key: str) -> None:
        self.redis.eval(_REMOVE_HOLDER, 1, key)

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def housekeeping(self) -> None:
        """Redis expires keys by itself."""

    def close(self) -> None:
        self.redis.close()


class SqlStore:
    """Embedded: the same jobs done in the database (`shared.sql_store`)."""

    name = "database"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def inbox(self, wake: Callable[[], None] | None = None) -> sql_store.SqlInbox:
        return sql_store.SqlInbox(self.sessions, wake=wake)

    def remember_script(self, message: str, *, phone: str, session_id: str) -> None:
        key = voice_script.placed_key(session_id, phone)
        sql_store.put(self.sessions, {key: message}, voice_script.SCRIPT_TTL_SECONDS)

    def lookup_script(self, *, session_id: str, phone: str) -> str | None:
        return sql_store.get_first(self.sessions, [voice_script.placed_key(session_id, phone)])

    def acquire_rate(self, name: str, count: int, per_second: float) -> float:
        return sql_store.acquire_rate(self.sessions, name, count, per_second)

    def mark(self, key: str, seconds: float) -> None:
        sql_store.put(self.sessions, {key: "1"}, seconds)

    def is_marked(self, key: str) -> bool:
        return sql_store.get_first(self.sessions, [key]) is not None

    def unmark(self, key: str) -> None:
        """Delete the key (a mark, or a voice script an erasure removes)."""
        sql_store.delete_keys(self.sessions, [key])

    def add_holder(self, key: str, seconds: float) -> None:
        sql_store.add_holder(self.sessions, key, seconds)

    def remove_holder(self, key: str) -> None:
        sql_store.remove_holder(self.sessions, key)

    def ping(self) -> bool:
        return sql_store.ping(self.engine)

    def housekeeping(self) -> None:
        """Delete expired keys (Redis would have expired them)."""
        sql_store.purge_expired(self.sessions)

    def close(self) -> None:
        """The engine belongs to its creator."""


def store_for(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    redis_timeout: float = 5,
    engine: Engine | None = None,
) -> Store:
    """The one place that decides: Redis when REDIS_URL is set, otherwise the database.

    Pass the process's own Redis client or database engine to share its connections.
    """
    if settings.uses_redis:
        if redis_client is None:
            redis_client = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=redis_timeout,
                socket_connect_timeout=redis_timeout,
                health_check_interval=25,
            )
        return RedisStore(redis_client)
    if engine is None:
        from shared.db import build_engine

        engine = build_engine(settings.effective_database_url)
    return SqlStore(engine)


def get_store() -> Store:
    """The worker process's store, over its shared Redis client or database engine (both fork-safe)."""
    from shared.broker import get_redis
    from shared.db import get_engine
    from shared.settings import get_settings

    settings = get_settings()
    if settings.uses_redis:
        return store_for(settings, redis_client=get_redis())
    return store_for(settings, engine=get_engine())
