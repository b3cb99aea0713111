"""The callback inbox: a Redis list the receiver pushes to and the drain task empties into Postgres.

Why a list and not a Celery task per callback: design §2 measured ~2.6k callbacks/s end to end this
way against ~0.8k/s with a task each. The list is a reliable queue (Redis `LMOVE` pattern):

- `push()` LPUSHes one JSON item `{"id", "kind", "received_at", "data"}`; the receiver answers 200 only
  after Redis accepted it.
- `claim()` atomically moves up to N items (oldest first) into a fresh processing list, recorded with its
  claim time in a sorted set; `ack()` deletes it after the Postgres commit; `release()` puts a failed
  batch back at the head of the inbox.
- `recover_stale()` puts back batches whose drainer died (SIGKILL, OOM) once older than `stale_after`.
- `dead_letter()` takes a poison callback out of its batch into a dead-letter list, with the reason and
  time (`DeadLetter`); `dead_letters()` lists them and `replay()` puts them back on the inbox under their
  own id, so one applied already is not applied again (`raw_callbacks.inbox_id` is unique).
- Without REDIS_URL (the embedded mode) `shared.sql_store.SqlInbox` keeps the same contract in the
  database; `shared.store.store_for` chooses.
- A wake-up (`nudge`) is published at most every `NUDGE_PERIOD_MS` per inbox, so the drain task starts
  within a moment of a callback without one Celery message per callback.
- A drainer that waits for more callbacks (DRAIN_LINGER_MS, worker/drain.py) keeps the wake-up mark set for
  as long (`keep_awake`): the callbacks pushed meanwhile are its own, and wake no second drain task. Only the
  holder of the linger lease waits (`hold_linger`): one drainer at a time, whatever wakes the others.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from shared import fast_json

INBOX = "reach:inbox"
CLAIMS = "reach:inbox:claims"  # sorted set: processing list name -> claim time
PROCESSING_PREFIX = "reach:inbox:processing:"
NUDGE = "reach:inbox:nudge"
NUDGE_PERIOD_MS = 500
#: Callbacks the drain task could not apply, parked for an operator to look at (JSON `DeadLetter`s).
DEAD_LETTERS = "reach:inbox:dead"
#: The one drainer allowed to wait for more callbacks: its token, for as long as it waits (and a margin).
LINGER_LEASE = "reach:inbox:linger"

# Pop up to ARGV[1] items from the inbox's tail into the processing list, 1,000 at a time (Lua's
# unpack() has a stack limit), and record the claim. Atomic: an item is in exactly one list.
_CLAIM = """
local want = tonumber(ARGV[1])
local taken = {}
while #taken < want do
  local n = math.min(1000, want - #taken)
  local items = redis.call('RPOP', KEYS[1], n)
  if not items then break end
  redis.call('RPUSH', KEYS[2], unpack(items))
  for _, item in ipairs(items) do taken[#taken + 1] = item end
  if #items < n then break end
end
if #taken > 0 then redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2]) end
return taken
"""

# Put a processing list back at the inbox's tail (next to be claimed), keeping its order, and forget it.
_RELEASE = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do redis.call('RPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], KEYS[2])
return #items
"""

# Move one item (by its id) from a processing list to the dead-letter list, so that releasing the batch
# later cannot put it back. KEYS: processing list, dead letters. ARGV: item id, dead-letter document.
_DEAD_LETTER = """
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' and doc.id == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, raw)
    break
  end
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


# Take the linger lease for ARGV[2] ms, or renew it if ARGV[1] (the drainer's token) holds it; 1 if it does now.
_HOLD_LINGER = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Let the linger lease go, only if ARGV[1] still holds it (it may have lapsed and gone to another drainer).
_RELEASE_LINGER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


# The receiver's fast path (web/fastpath.py): for a batch of callbacks, in one round trip, count each in
# its client's rate-limit windows and push those every window had room for; then set the drainer's wake-up
# mark. Returns {1 if the mark was set (wake a drainer) else 0, "1" pushed | "0" refused per callback, as one
# string: one reply element for the batch, not one to parse per callback}.
# The windows are the `limits` library's sliding-window counters (its acquire_sliding_window.lua: same keys,
# same arithmetic), so Flask-Limiter on the other routes counts into the very same windows; as there, the
# windows checked before a full one keep their count.
# KEYS: inbox, wake-up mark, then every callback's windows as (previous, current) key pairs, in order.
# ARGV: mark lifetime in ms, then per callback: payload, its number of windows, (amount, seconds) per window.
PUSH_WITHIN_LIMITS = """
local function acquire(previous_key, current_key, limit, expiry)
  local current_ttl = tonumber(redis.call('PTTL', current_key))
  if current_ttl > 0 and current_ttl < expiry then
    redis.call('RENAME', current_key, previous_key)
    redis.call('SET', current_key, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('GET', previous_key)) or 0
  local previous_ttl = math.max(0, tonumber(redis.call('PTTL', previous_key)) or 0)
  local current_count = tonumber(redis.call('GET', current_key)) or 0
  if math.floor(previous_count * previous_ttl / expiry) + current_count + 1 > limit then
    return false
  end
  if redis.call('EXISTS', current_key) == 1 then
    redis.call('INCRBY', current_key, 1)
  else
    redis.call('SET', current_key, 1, 'PX', expiry * 2)
  end
  return true
end

local accepted, pushed = {}, {}
local k, a = 3, 2
while a <= #ARGV do
  local payload, windows = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local room = true
  for _ = 1, windows do
    room = room and acquire(KEYS[k], KEYS[k + 1], tonumber(ARGV[a]), tonumber(ARGV[a + 1]) * 1000)
    k, a = k + 2, a + 2
  end
  accepted[#accepted + 1] = room and '1' or '0'
  if room then pushed[#pushed + 1] = payload end
end
local woke = 0
if #pushed > 0 then
  redis.call('LPUSH', KEYS[1], unpack(pushed))
  if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[1]) then woke = 1 end
end
return {woke, table.concat(accepted)}
"""


# The callbacks that may be the oldest not yet applied: the inbox's tail (LPUSH puts the newest at the head,
# claims take from the tail, a released batch goes back to the tail) and the head of every processing list
# (a claim keeps the inbox's order). One per list: O(batches), atomic, so no item is missed as it moves.
_OLDEST_CANDIDATES = """
local found = {}
local tail = redis.call('LINDEX', KEYS[1], -1)
if tail then found[#found + 1] = tail end
for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local head = redis.call('LINDEX', key, 0)
  if head then found[#found + 1] = head end
end
return found
"""


@dataclass(frozen=True)
class Window:
    """One client's rate-limit window, as the `limits` library keeps it in Redis (web/limits.py builds it)."""

    previous_key: str
    current_key: str
    amount: int
    seconds: int


@dataclass(frozen=True)
class InboxItem:
    id: str
    kind: str
    received_at: datetime
    data: dict[str, str]

    @classmethod
    def from_json(cls, raw: str | bytes) -> InboxItem:
        doc = fast_json.loads(raw)
        return cls(
            id=doc["id"],
            kind=doc["kind"],
            received_at=datetime.fromisoformat(doc["received_at"]),
            data=doc["data"],
        )


@dataclass(frozen=True)
class DeadLetter:
    """A parked callback: the inbox item as it was queued, why it was parked, and when."""

    item: InboxItem
    reason: str
    parked_at: datetime | None

    def to_json(self) -> str:
        return _dumps({**_item_doc(self.item), "reason": self.reason, "parked_at": _iso(self.parked_at)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter:
        """Also reads the entries parked before reasons were kept (no reason, time or received time)."""
        doc = json.loads(raw)
        parked_at = datetime.fromisoformat(doc["parked_at"]) if doc.get("parked_at") else None
        received = doc.get("received_at")
        item = InboxItem(
            id=doc["id"],
            kind=doc["kind"],
            received_at=datetime.fromisoformat(received) if received else parked_at or datetime.now(UTC),
            data=doc["data"],
        )
        return cls(item=item, reason=doc.get("reason") or "", parked_at=parked_at)


def _item_doc(item: InboxItem) -> dict[str, object]:
    return {"id": item.id, "kind": item.kind, "received_at": item.received_at.isoformat(), "data": item.data}


def item_json(item: InboxItem) -> str:
    """An item as the inbox keeps it (what `encode` wrote)."""
    return _dumps(_item_doc(item))


def _dumps(doc: dict[str, object]) -> str:
    """The inbox's one JSON spelling: compact, non-ASCII kept as is."""
    return fast_json.compact_dumps(doc)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


@dataclass(frozen=True)
class Batch:
    key: str
    items: list[InboxItem]


class _ItemIds:
    """Inbox ids, unique across processes and machines (`raw_callbacks.inbox_id` is unique: a repeated id would
    be taken for a callback already drained): 64 random bits drawn once per process, and again in a forked
    child, then a counter. 32 hex digits, like the uuid4 they replace, without uuid4's system call each
    (6 % of the receiver's own time per DLR under load, bench/RESULTS.md section 1)."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"  # next() on a count is atomic under the GIL


_item_ids = _ItemIds()


def push_within_arguments(callbacks: Sequence[tuple[str, Sequence[Window]]]) -> tuple[list[str], list[str | int]]:
    """PUSH_WITHIN_LIMITS's keys and arguments for a batch of (payload, windows): `Inbox.push_within` sends them,
    and so does the receiver's async front over its own client (web/async_push.py)."""
    keys: list[str] = [INBOX, NUDGE]
    args: list[str | int] = [NUDGE_PERIOD_MS]
    for payload, windows in callbacks:
        args += [payload, len(windows)]
        for window in windows:
            keys += [window.previous_key, window.current_key]
            args += [window.amount, window.seconds]
    return keys, args


def pushed_flags(accepted: bytes | str) -> list[bool]:
    """PUSH_WITHIN_LIMITS's "1"/"0" per callback (bytes, or text from a client that decodes)."""
    return [flag in (49, "1") for flag in accepted]  # 49: b"1"[0]


def encode(kind: str, data: dict[str, str], *, now: datetime | None = None) -> tuple[str, str]:
    item_id = _item_ids.next()
    received_at = (now or datetime.now(UTC)).isoformat()
    return item_id, _dumps({"id": item_id, "kind": kind, "received_at": received_at, "data": data})


class Inbox:
    """The Redis side of the callback pipeline."""

    def __init__(self, client: redis.Redis, *, wake: Callable[[], None] | None = None) -> None:
        self.redis = client
        self._wake = wake
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._push_within_limits = client.register_script(PUSH_WITHIN_LIMITS)
        self._oldest_candidates = client.register_script(_OLDEST_CANDIDATES)
        self._hold_linger = client.register_script(_HOLD_LINGER)
        self._release_linger = client.register_script(_RELEASE_LINGER)

    def push(self, kind: str, data: dict[str, str]) -> str:
        """Queue one callback; returns its inbox id. Raises `redis.RedisError` if Redis did not take it."""
        item_id, payload = encode(kind, data)
        # One round trip for the push and the wake-up mark: the receiver's cost is mostly Redis round trips
        # (bench/RESULTS.md, "Receiver"). An error in either raises, as a failed push must.
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(INBOX, payload)
            if self._wake is not None:
                pipe.set(NUDGE, 1, nx=True, px=NUDGE_PERIOD_MS)
            marked = pipe.execute()[1:]
        if self._wake is not None and marked[0]:
            self._wake()
        return item_id

    def push_within(self, callbacks: Sequence[tuple[str, Sequence[Window]]]) -> list[bool]:
        """Queue each encoded callback (`encode()`) if every one of its windows has room for one more request
        (each counts it); False for one refused, which was not queued. One round trip for the lot."""
        keys, args = push_within_arguments(callbacks)
        woke, accepted = self._push_within_limits(keys=keys, args=args)
        if woke:
            self.wake()
        return pushed_flags(accepted)

    def wake(self) -> None:
        """Wake a drainer (after a push set the wake-up mark), if this inbox was given a way to."""
        if self._wake is not None:
            self._wake()

    def nudge(self) -> None:
        """Wake a drainer, at most once per `NUDGE_PERIOD_MS` (the drainer clears the mark when idle)."""
        if self._wake is not None and self.redis.set(NUDGE, 1, nx=True, px=NUDGE_PERIOD_MS):
            self._wake()

    def claim(self, limit: int) -> Batch | None:
        key = PROCESSING_PREFIX + uuid.uuid4().hex
        raw_items = self._claim(keys=[INBOX, key, CLAIMS], args=[limit, time.time()])
        if not raw_items:
            return None
        return Batch(key, [InboxItem.from_json(raw) for raw in raw_items])

    def ack(self, batch: Batch) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(batch.key)
            pipe.zrem(CLAIMS, batch.key)
            pipe.execute()

    def release(self, batch_key: str) -> int:
        return int(self._release(keys=[INBOX, batch_key, CLAIMS]))

    def recover_stale(self, stale_after: float) -> int:
        """Put back the batches of drainers that died; returns how many callbacks went back."""
        cutoff = time.time() - stale_after
        restored = 0
        for key in self.redis.zrangebyscore(CLAIMS, "-inf", cutoff):
            restored += self.release(key.decode() if isinstance(key, bytes) else key)
        return restored

    def dead_letter(self, batch: Batch, item: InboxItem, reason: str = "") -> None:
        """Park one claimed callback that cannot be applied: out of its batch (a release of the batch leaves
        it parked), into the dead-letter list with `reason` and the time."""
        parked = DeadLetter(item=item, reason=reason, parked_at=datetime.now(UTC))
        self._dead_letter(keys=[batch.key, DEAD_LETTERS], args=[item.id, parked.to_json()])

    def dead_letters(self) -> list[DeadLetter]:
        """The parked callbacks, oldest parked first."""
        return [DeadLetter.from_json(raw) for raw in self.redis.lrange(DEAD_LETTERS, 0, -1)]

    def replay(self, ids: Collection[str] | None = None) -> int:
        """Put parked callbacks (those of `ids`, or all) back on the inbox, next to be claimed, under their own
        ids; returns how many. Atomic against a drainer parking another one meanwhile (WATCH)."""
        wanted = None if ids is None else set(ids)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(DEAD_LETTERS)
                    raws = pipe.lrange(DEAD_LETTERS, 0, -1)
                    chosen = [r for r in raws if wanted is None or DeadLetter.from_json(r).item.id in wanted]
                    if not chosen:
                        pipe.unwatch()
                        return 0
                    pipe.multi()
                    for raw in chosen:
                        pipe.lrem(DEAD_LETTERS, 1, raw)
                        pipe.rpush(INBOX, item_json(DeadLetter.from_json(raw).item))  # tail: claimed next
                    pipe.execute()
                    return len(chosen)
                except redis.WatchError:
                    continue

    def mark_idle(self) -> None:
        """Called by a drainer that found the inbox empty, before its last look (see module docs)."""
        self.redis.delete(NUDGE)

    def keep_awake(self, seconds: float) -> None:
        """Called by a drainer about to wait `seconds` for more callbacks: the wake-up mark stays set while it is
        awake, so the callbacks pushed meanwhile wake no second drainer (it clears the mark when idle)."""
        self.redis.set(NUDGE, 1, px=NUDGE_PERIOD_MS + math.ceil(seconds * 1000))

    def hold_linger(self, token: str, seconds: float) -> bool:
        """Take (or, holding it, renew) for `seconds` the lease of the one drainer that may wait for more callbacks;
        False while another holds it. It lapses by itself: a drainer that died holding it stops nobody for long."""
        return bool(self._hold_linger(keys=[LINGER_LEASE], args=[token, max(1, math.ceil(seconds * 1000))]))

    def release_linger(self, token: str) -> None:
        """Let the linger lease go, if `token` still holds it."""
        self._release_linger(keys=[LINGER_LEASE], args=[token])

    def lingering_elsewhere(self, token: str) -> bool:
        """Whether a drainer other than `token`'s holds the linger lease (it will claim again, and look last)."""
        holder = self.redis.get(LINGER_LEASE)
        return holder is not None and holder not in (token, token.encode())

    def depth(self) -> int:
        return int(self.redis.llen(INBOX))

    def in_flight(self) -> int:
        return int(self.redis.zcard(CLAIMS))

    def oldest_received_at(self) -> datetime | None:
        """When the oldest callback not yet applied (queued or in a claimed batch) was received; None when
        every callback received so far has been applied. Parked (dead-lettered) callbacks do not count.

        Order in the list is push order; the receiver stamps `received_at` just before it pushes, so two
        receivers can interleave by a few milliseconds: negligible against the send grace it is used with."""
        candidates = self._oldest_candidates(keys=[INBOX, CLAIMS])
        return min((InboxItem.from_json(raw).received_at for raw in candidates), default=None)
