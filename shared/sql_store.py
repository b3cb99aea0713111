"""What Redis does for Reach, done in the database instead, for the embedded mode (no REDIS_URL).

Same behaviour as the Redis versions (`shared.inbox.Inbox`, `shared.voice_script`, `shared.ratelimit`),
same interfaces, chosen in one place (`shared.store.store_for`):

- `SqlInbox`: the reliable callback queue. `push()` commits one `inbox_entries` row before the receiver
  answers 200. `claim()` stamps up to N unclaimed rows, oldest first, with a fresh claim key in one
  `UPDATE` (SQLite runs it under its single write lock; Postgres skips rows another claimer holds), so an
  entry is in at most one batch. `ack()` deletes the batch after the database commit of what it applied;
  `release()` and `recover_stale()` clear the claim so the entries are claimed again, in their order.
  A batch applied but not acked (the drainer died in between) is applied again harmlessly: `raw_callbacks`
  is keyed by the item id.
- `kv_entries`: keys with an expiry, for voice scripts, the inbox wake-up mark and send-rate windows.

Times are epoch seconds (floats) so SQLite and Postgres compare them the same way.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from sqlalchemy import Engine, case, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import insert_for
from shared.inbox import NUDGE_PERIOD_MS, Batch, DeadLetter, InboxItem, encode
from shared.store_models import InboxEntry, KvEntry

NUDGE_KEY = "inbox:nudge"
LINGER_KEY = "inbox:linger"


class SqlInbox:
    """The callback inbox as rows of `inbox_entries` (see the module docs)."""

    def __init__(self, sessions: sessionmaker[Session], *, wake: Callable[[], None] | None = None) -> None:
        self.sessions = sessions
        self._wake = wake

    def push(self, kind: str, data: dict[str, str]) -> str:
        """Queue one callback; returns its inbox id. Raises `SQLAlchemyError` if the database did not take it."""
        item_id, payload = encode(kind, data)
        with self.sessions.begin() as session:
            session.add(InboxEntry(payload=payload))
        self.nudge()
        return item_id

    def nudge(self) -> None:
        """Wake a drainer, at most once per `NUDGE_PERIOD_MS` (the drainer clears the mark when idle)."""
        if self._wake is not None and set_if_absent(self.sessions, NUDGE_KEY, NUDGE_PERIOD_MS / 1000):
            self._wake()

    def claim(self, limit: int) -> Batch | None:
        key = uuid.uuid4().hex
        with self.sessions.begin() as session:
            oldest = (
                select(InboxEntry.id)
                .where(InboxEntry.claim_key.is_(None), InboxEntry.dead.is_(False))
                .order_by(InboxEntry.id)
                .limit(limit)
                .with_for_update(skip_locked=True)  # Postgres; SQLite serialises writers anyway
            )
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id.in_(oldest), InboxEntry.claim_key.is_(None))
                .values(claim_key=key, claimed_at=time.time())
                .execution_options(synchronize_session=False)
            )
            payloads = session.scalars(
                select(InboxEntry.payload).where(InboxEntry.claim_key == key).order_by(InboxEntry.id)
            ).all()
        if not payloads:
            return None
        return Batch(key, [InboxItem.from_json(raw) for raw in payloads])

    def ack(self, batch: Batch) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(InboxEntry).where(InboxEntry.claim_key == batch.key))

    def release(self, batch_key: str) -> int:
        with self.sessions.begin() as session:
            result = session.execute(
                update(InboxEntry)
                .where(InboxEntry.claim_key == batch_key)
                .values(claim_key=None, claimed_at=None)
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def recover_stale(self, stale_after: float) -> int:
        """Put back the batches of drainers that died; returns how many callbacks went back."""
        cutoff = time.time() - stale_after
        with self.sessions.begin() as session:
            result = session.execute(
                update(InboxEntry)
                .where(InboxEntry.claim_key.is_not(None), InboxEntry.claimed_at < cutoff)
                .values(claim_key=None, claimed_at=None)
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def dead_letter(self, batch: Batch, item: InboxItem, reason: str = "") -> None:
        """Park one claimed callback that cannot be applied, with `reason` and the time; it is kept, never
        claimed again until replayed."""
        with self.sessions.begin() as session:
            for entry in session.scalars(select(InboxEntry).where(InboxEntry.claim_key == batch.key)):
                if InboxItem.from_json(entry.payload).id == item.id:
                    entry.dead, entry.claim_key, entry.claimed_at = True, None, None
                    entry.dead_reason, entry.dead_at = reason, time.time()

    def mark_idle(self) -> None:
        """Called by a drainer that found the inbox empty, before its last look."""
        with self.sessions.begin() as session:
            session.execute(delete(KvEntry).where(KvEntry.key == NUDGE_KEY))

    def keep_awake(self, seconds: float) -> None:
        """Called by a drainer about to wait `seconds` for more callbacks (shared.inbox.Inbox.keep_awake)."""
        put(self.sessions, {NUDGE_KEY: "1"}, NUDGE_PERIOD_MS / 1000 + seconds)

    def hold_linger(self, token: str, seconds: float) -> bool:
        """Take or renew the one-drainer linger lease (shared.inbox.Inbox.hold_linger)."""
        return set_if_absent(self.sessions, LINGER_KEY, seconds, value=token, or_held_by=token)

    def release_linger(self, token: str) -> None:
        """Let the linger lease go, if `token` still holds it."""
        with self.sessions.begin() as session:
            session.execute(delete(KvEntry).where(KvEntry.key == LINGER_KEY, KvEntry.value == token))

    def lingering_elsewhere(self, token: str) -> bool:
        """Whether a drainer other than `token`'s holds the linger lease."""
        holder = get_first(self.sessions, [LINGER_KEY])
        return holder is not None and holder != token

    def depth(self) -> int:
        with self.sessions() as session:
            unclaimed = InboxEntry.claim_key.is_(None) & InboxEntry.dead.is_(False)
            return int(session.scalar(select(func.count()).where(unclaimed)) or 0)

    def in_flight(self) -> int:
        """Batches claimed and not yet acknowledged."""
        with self.sessions() as session:
            return int(session.scalar(select(func.count(func.distinct(InboxEntry.claim_key)))) or 0)

    def oldest_received_at(self) -> datetime | None:
        """When the oldest callback not yet applied (queued or claimed) was received; None when there is
        none. Entries are in push order, so the lowest live id is the oldest: one index probe."""
        with self.sessions() as session:
            payload = session.scalar(
                select(InboxEntry.payload).where(InboxEntry.dead.is_(False)).order_by(InboxEntry.id).limit(1)
            )
        return None if payload is None else InboxItem.from_json(payload).received_at

    def dead_letters(self) -> list[DeadLetter]:
        """The parked callbacks, oldest parked first."""
        with self.sessions() as session:
            rows = session.execute(
                select(InboxEntry.payload, InboxEntry.dead_reason, InboxEntry.dead_at)
                .where(InboxEntry.dead.is_(True))
                .order_by(InboxEntry.dead_at, InboxEntry.id)
            ).all()
        return [
            DeadLetter(
                item=InboxItem.from_json(payload),
                reason=reason or "",
                parked_at=datetime.fromtimestamp(dead_at, UTC) if dead_at is not None else None,
            )
            for payload, reason, dead_at in rows
        ]

    def replay(self, ids: Collection[str] | None = None) -> int:
        """Put parked callbacks (those of `ids`, or all) back on the inbox under their own ids; returns how
        many. An entry keeps its place in the queue (claims go by row id), so it is among the next claimed."""
        wanted = None if ids is None else set(ids)
        with self.sessions.begin() as session:
            dead = session.scalars(select(InboxEntry).where(InboxEntry.dead.is_(True)).with_for_update()).all()
            chosen = [e for e in dead if wanted is None or InboxItem.from_json(e.payload).id in wanted]
            for entry in chosen:
                entry.dead, entry.dead_reason, entry.dead_at = False, None, None
        if chosen:
            self.nudge()
        return len(chosen)


# -- keys with an expiry -------------------------------------------------------------------------------------


def set_if_absent(
    sessions: sessionmaker[Session], key: str, ttl: float, value: str = "1", *, or_held_by: str | None = None
) -> bool:
    """Redis `SET key value NX PX ttl`: True when the key was absent (or expired) and is now set; also, with
    `or_held_by`, when it held that value (its lifetime starts again)."""
    now = time.time()
    with sessions.begin() as session:
        stmt = insert_for(session, KvEntry).values(key=key, value=value, counter=0, expires_at=now + ttl)
        settable = KvEntry.expires_at <= now
        if or_held_by is not None:
            settable = settable | (KvEntry.value == or_held_by)
        stmt = stmt.on_conflict_do_update(
            index_elements=[KvEntry.key],
            set_={"value": value, "counter": 0, "expires_at": now + ttl},
            where=settable,
        )
        # RETURNING, not rowcount: an upsert's rowcount is not reported the same way by every driver.
        return session.execute(stmt.returning(KvEntry.key)).scalar_one_or_none() is not None


def put(sessions: sessionmaker[Session], values: dict[str, str], ttl: float) -> None:
    """Redis `SET key value EX ttl` for each pair, in one transaction."""
    if not values:
        return
    expires_at = time.time() + ttl
    with sessions.begin() as session:
        for key, value in values.items():
            stmt = insert_for(session, KvEntry).values(key=key, value=value, counter=0, expires_at=expires_at)
            stmt = stmt.on_conflict_do_update(
                index_elements=[KvEntry.key], set_={"value": value, "counter": 0, "expires_at": expires_at}
            )
            session.execute(stmt)


def delete_keys(sessions: sessionmaker[Session], keys: list[str]) -> None:
    """Redis `DEL`."""
    with sessions.begin() as session:
        session.execute(delete(KvEntry).where(KvEntry.key.in_(keys)))


def get_first(sessions: sessionmaker[Session], keys: list[str]) -> str | None:
    """The value of the first of `keys` that is set and not expired."""
    with sessions() as session:
        found = dict(
            session.execute(
                select(KvEntry.key, KvEntry.value).where(KvEntry.key.in_(keys), KvEntry.expires_at > time.time())
            ).all()
        )
    return next((found[k] for k in keys if found.get(k) is not None), None)


def add_holder(sessions: sessionmaker[Session], key: str, ttl: float) -> None:
    """`RedisStore.add_holder`: one more holder of a mark (`get_first` sees it: its value is set)."""
    now = time.time()
    with sessions.begin() as session:
        stmt = insert_for(session, KvEntry).values(key=key, value="1", counter=1, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=[KvEntry.key],
            set_={
                "value": "1",
                "counter": case((KvEntry.expires_at > now, KvEntry.counter), else_=0) + 1,
                "expires_at": now + ttl,
            },
        )
        session.execute(stmt)


def remove_holder(sessions: sessionmaker[Session], key: str) -> None:
    """`RedisStore.remove_holder`: one holder fewer; the mark goes with the last."""
    with sessions.begin() as session:
        session.execute(update(KvEntry).where(KvEntry.key == key).values(counter=KvEntry.counter - 1))
        session.execute(delete(KvEntry).where(KvEntry.key == key, KvEntry.counter <= 0))


def acquire_rate(sessions: sessionmaker[Session], name: str, count: int, per_second: float) -> float:
    """`shared.ratelimit.acquire` over `kv_entries`: book `count` sends on the timeline, wait for the turn.

    The counter holds the earliest moment the next send may go, in microseconds; one upsert books the turn.
    """
    now = time.time()
    now_us, booked_us = int(now * 1_000_000), math.ceil(count / per_second * 1_000_000)
    with sessions.begin() as session:
        stmt = insert_for(session, KvEntry).values(
            key=f"rate:{name}", value=None, counter=now_us + booked_us, expires_at=now + count / per_second + 5
        )
        turn_end = case((KvEntry.counter > now_us, KvEntry.counter), else_=now_us) + booked_us
        stmt = stmt.on_conflict_do_update(
            index_elements=[KvEntry.key],
            set_={"counter": turn_end, "expires_at": turn_end / 1_000_000.0 + 5},
        ).returning(KvEntry.counter)
        free_us = int(session.execute(stmt).scalar_one())
    wait = max(0.0, (free_us - booked_us) / 1_000_000 - now)
    if wait > 0:
        time.sleep(wait)
    return wait


def purge_expired(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        result = session.execute(delete(KvEntry).where(KvEntry.expires_at <= time.time()))
    return int(result.rowcount)  # type: ignore[attr-defined]


def ping(engine: Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(select(1)).scalar_one() == 1
