"""Idempotency keys for starting cycles (`Idempotency-Key` on `POST /api/cycles`, as Stripe does; `reach cycle
run` sends one per invocation): a request retried after a lost answer gets the first cycle back, never a second.

One namespace for the whole installation, not one per operator token: Reach has one operator (every token
of API_TOKEN is the same account, the list exists for rotation), and a retry sent after a rotation with the
new token must still find its first attempt. Keys live in the database (`idempotency_keys`, unique), so two
receivers, or the CLI and a receiver, agree; a key is forgotten WINDOW after its first use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.db import insert_for
from shared.operator_models import IdempotencyKey

WINDOW = timedelta(hours=24)
MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"


class KeyReused(ValueError):
    """The key was used within WINDOW for a different request; the message names it."""


@dataclass(frozen=True)
class Started:
    cycle_id: int
    #: True when the key had started this cycle before: nothing new was started.
    replayed: bool


def check_key(key: str) -> str:
    """The key as given, or ValueError saying why it cannot be one."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ValueError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def request_hash(doc: Mapping[str, Any]) -> str:
    """What identifies a request's content, whatever the order of its fields."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def start_once(session: Session, key: str | None, digest: str, start: Callable[[], int]) -> Started:
    """`start()` (which records a cycle in `session`) unless `key` started one within WINDOW: then that one.

    The key's row is inserted before the cycle, in the same transaction: a concurrent request with the same
    key waits on the unique key until this one commits, then finds its cycle."""
    if key is None:
        return Started(start(), replayed=False)
    now = datetime.now(UTC)
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.key == key, IdempotencyKey.created_at < now - WINDOW))
    claimed = session.execute(
        insert_for(session, IdempotencyKey)
        .values(key=key, request_hash=digest, created_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(IdempotencyKey.key)
    ).first()
    if claimed is None:
        first = session.execute(
            select(IdempotencyKey.request_hash, IdempotencyKey.cycle_id).where(IdempotencyKey.key == key)
        ).one()
        if first.request_hash != digest or first.cycle_id is None:
            raise KeyReused(f"{HEADER} {key!r} was used for a different request; use a new key for a new cycle")
        return Started(first.cycle_id, replayed=True)
    cycle_id = start()
    session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key).values(cycle_id=cycle_id))
    return Started(cycle_id, replayed=False)


def forget_expired(session: Session, limit: int = 5000) -> int:
    """Delete up to `limit` keys older than WINDOW (housekeeping); a reused old key starts a new cycle anyway."""
    cutoff = datetime.now(UTC) - WINDOW
    oldest = select(IdempotencyKey.key).where(IdempotencyKey.created_at < cutoff).limit(limit)
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.key.in_(oldest)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
