"""What views reach through `current_app`: settings, the store (Redis or the database), the inbox, a Celery
producer, sessions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import Celery
from flask import Flask, current_app
from kombu.exceptions import OperationalError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.broker import make_celery
from shared.db import build_engine, normalise_url
from shared.settings import Settings
from shared.store import CallbackInbox, Store, store_for

log = logging.getLogger(__name__)

#: Seconds the receiver waits on Redis: a callback gets its 503 (and AT retries) rather than waiting on a dead
#: Redis. Also the async front's own client (web/async_push.py).
RECEIVER_REDIS_TIMEOUT = 2


@dataclass
class Services:
    settings: Settings
    store: Store
    inbox: CallbackInbox
    celery: Celery
    engine: Engine
    sessions: sessionmaker[Session]
    #: For a single read a caller waits on (the USSD status screen): autocommit, so no BEGIN and ROLLBACK
    #: round trips around it; the same pool. Measured: 0.56 to 0.70 ms a lookup against 1.09 ms in a Session.
    live_reads: Engine

    #: More connections to release with the rest (the rate limiter's Redis client: web/limits.py).
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release connections (tests build many apps in one process): a socket left to the garbage
        collector is a ResourceWarning in whichever test happens to run then."""
        self.store.close()
        self.engine.dispose()
        self.celery.close()  # its producer's broker connection (the drainer's wake-ups)
        for close in self.closers:
            close()


def init_app(app: Flask, settings: Settings) -> None:
    celery = make_celery("reach-web", settings)

    def wake_drainer() -> None:
        # Best effort: the callback is already kept when this runs, so a broker that just went away must not
        # turn its answer into an error; beat's drain tick (every 2 s) picks it up.
        try:
            celery.send_task("reach.ingest.drain")
        except OperationalError as exc:
            log.warning("callback kept, but the drainer could not be woken: %s", exc)

    engine = build_engine(normalise_url(settings.effective_database_url))
    store = store_for(settings, engine=engine, redis_timeout=RECEIVER_REDIS_TIMEOUT)
    app.extensions["reach"] = Services(
        settings=settings,
        store=store,
        inbox=store.inbox(wake=wake_drainer),
        celery=celery,
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        live_reads=engine.execution_options(isolation_level="AUTOCOMMIT"),
    )


def services() -> Services:
    return current_app.extensions["reach"]
