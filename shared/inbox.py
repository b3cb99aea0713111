"""The callback inbox: a Redis list the receiver pushes to and the drain task empties into Postgres.

Why a list and not a Celery task per callback: design §2 measured ~2.6k callbacks/s end to end this
way against ~0.8k/s with a task each. The list is a reliable queue (Redis `LMOVE` pattern):

- `push()` LPUSHes one JSON item `{"id", "kind", "received_at", "data"}`; the receiver answers 200 only
  after Redis accepted it.
- `claim()` atomically moves up to N items (oldest first) into a fresh processing list, recorded with its
  claim time in a sorted set; `ack()` deletes it after the Postgres commit; `release()` puts a failed
  batch back at the head of the inbox.
- `recover_stale()` puts back batches whose drainer died (SIGKILL, OOM) once older than `stale_after`.
- Without REDIS_URL (the embedded mode) `shared.sql_store.SqlInbox` keeps the same contract in the
  database; `shared.store.store_for` chooses.
- A wake-up (`nudge`) is published at most every `NUDGE_PERIOD_MS` per inbox, so the drain task starts
  within a moment of a callback without one Celery message per callback.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

INBOX = "reach:inbox"
CLAIMS = "reach:inbox:claims"  # sorted set: processing list name -> claim time
PROCESSING_PREFIX = "reach:inbox:processing:"
NUDGE = "reach:inbox:nudge"
DEAD_LETTERS = "reach:inbox:dead"  # callbacks that could not be applied, kept for an operator
NUDGE_PERIOD_MS = 500
#: Callbacks the drain task could not apply, parked for an operator to look at.
DEAD_LETTERS = "reach:inbox:dead"

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


@dataclass(frozen=True)
class InboxItem:
    id: str
    kind: str
    received_at: datetime
    data: dict[str, str]

    @classmethod
    def from_json(cls, raw: str | bytes) -> InboxItem:
        doc = json.loads(raw)
        return cls(
            id=doc["id"],
            kind=doc["kind"],
            received_at=datetime.fromisoformat(doc["received_at"]),
            data=doc["data"],
        )


@dataclass(frozen=True)
class Batch:
    key: str
    items: list[InboxItem]


def encode(kind: str, data: dict[str, str], *, now: datetime | None = None) -> tuple[str, str]:
    item_id = uuid.uuid4().hex
    received_at = (now or datetime.now(UTC)).isoformat()
    doc = {"id": item_id, "kind": kind, "received_at": received_at, "data": data}
    return item_id, json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class Inbox:
    """The Redis side of the callback pipeline."""

    def __init__(self, client: redis.Redis, *, wake: Callable[[], None] | None = None) -> None:
        self.redis = client
        self._wake = wake
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

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

    def dead_letter(self, batch: Batch, item: InboxItem) -> None:
        """Park one claimed callback that cannot be applied (the batch's ack removes it from processing)."""
        self.redis.rpush(DEAD_LETTERS, json.dumps({"id": item.id, "kind": item.kind, "data": item.data}))

    def mark_idle(self) -> None:
        """Called by a drainer that found the inbox empty, before its last look (see module docs)."""
        self.redis.delete(NUDGE)

    def depth(self) -> int:
        return int(self.redis.llen(INBOX))

    def in_flight(self) -> int:
        return int(self.redis.zcard(CLAIMS))
