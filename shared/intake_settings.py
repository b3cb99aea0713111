"""Settings of what Reach takes in: a request body's size and pace, the request rate limits (Flask-Limiter,
counted in Redis per client address), and how the drain moves queued callbacks into the database.
`shared.settings.Settings` inherits them, so they are read, validated and named in errors like every other
setting."""

from __future__ import annotations

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class IntakeSettings(BaseSettings):
    #: Largest callback or operator body accepted; AT's callbacks are well under 2 KiB.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: How long a request's body may take to arrive from the receiver's first read of it, plus a second per
    #: 64 KiB it delivers (so a large upload is cut off only for being slow); a client that trickles it gets
    #: a 408 and its connection closed, so it holds no worker slot longer (web/body_deadline.py).
    body_timeout_seconds: float = Field(default=10.0, ge=1, le=300)
    #: Callbacks moved from Redis to Postgres per drain transaction. 2,000 rather than 500: the drain's writes are
    #: set-based, so what a batch costs besides its rows (round trips, commit) weighs less; 19 % less CPU per
    #: report, worker and Postgres together (bench/RESULTS.md "DLR apply", round 3).
    drain_batch_size: int = Field(default=2000, ge=1, le=10_000)
    #: After a batch that was not full the drain waits until this long has passed since its claim before it claims
    #: again, so reports trickling in fill a batch: end to end at ~1,800 DLRs/s the drain otherwise claimed a few
    #: dozen at a time and each batch's fixed costs (transaction, statements, inbox round trips) dominated the
    #: worker's CPU (bench/RESULTS.md "drain batches end to end": 250 ms took 40-50 % less worker CPU per report
    #: than 100 ms in the same run). 250 ms is one full batch at the issue's target of 7,500 DLRs/s, and keeps a
    #: report's wait well under the ~1 s design §6 allows; a report already claimed never waits for it; 0: no wait.
    #: One drain waits at a time (the inbox's linger lease, worker/drain.py): without it two woken drains waited
    #: at once, and a worker of two processes serving every queue (`reach up`) sat in waits for a drain's 20 s
    #: budget while cycles and sends queued (tests/test_worker.py, steady callback traffic: 20-43 s instead of 9).
    #: A drain lingering is a task in flight; a worker that lost Redis under one stopped for good with kombu 5.7
    #: (shared/kombu_fix.py), so the default was 0 until that fix (tests/test_broker_loss.py).
    drain_linger_ms: int = Field(default=250, ge=0, le=1000)
    #: A claimed batch of callbacks older than this belongs to a drainer that died; housekeeping puts it
    #: back. Too short only re-reads batches still being applied (skipped by their inbox id), never doubles.
    drain_stale_seconds: float = Field(default=60.0, ge=1, le=3600)

    # -- request rate limits (Flask-Limiter, counted in Redis; per client address) ------------------------
    #: Callbacks without the right `?token=` while WEBHOOK_TOKEN is set: one bucket per client address across
    #: every callback endpoint. A callback carrying the token (AT, or us) is never refused for rate: a 429 may
    #: be a report lost for good (AT's retries are undocumented), so a stranger must not be able to cause one.
    rate_limit_unauthenticated: str = "60/minute"
    #: Every callback while WEBHOOK_TOKEN is unset (nobody can prove being AT), per endpoint. AT posts from a
    #: few servers, so keep this above AT's bursts (README, Security). Not used when WEBHOOK_TOKEN is set.
    rate_limit_callbacks: str = "2000/second"
    #: The operator API (`/api/...`): people and scripts, never bulk traffic.
    rate_limit_operator: str = "600/minute"
    #: Dashboard sign-in attempts (every POST /dashboard/login, right or wrong). People sign in a few times a
    #: day; a guesser gets 10 a minute and 100 a day per address (against 24-character tokens).
    rate_limit_dashboard_login: str = "10/minute;100/day"
    #: Reverse proxies in front of the receiver whose X-Forwarded-For is believed (0: none, the client is
    #: the connection's address). Set it to how many there are, or every client shares the proxy's budget.
    trusted_proxies: int = Field(default=0, ge=0, le=5)

    @field_validator(
        "rate_limit_callbacks", "rate_limit_unauthenticated", "rate_limit_operator", "rate_limit_dashboard_login"
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            parsed = parse_many(value)
        except ValueError:
            parsed = []
        if not parsed or any(limit.amount < 1 for limit in parsed):
            raise ValueError(f"not a rate limit {value!r}; write e.g. 2000/second or 600 per minute")
        return value
