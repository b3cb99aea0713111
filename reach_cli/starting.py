"""`reach cycle run`'s start: once per idempotency key, one retry on a lost connection, and a word when no
worker runs. A CLI error must never leave a recorded cycle behind that a retry would double: each invocation
sends a key (`--idempotency-key`, else a new uuid), and the retry reuses it, so a commit whose answer was lost
finds its cycle instead of starting a second one; a script retrying a failed `reach cycle run` passes its own
key for the same effect across invocations."""

from __future__ import annotations

from typing import Any

from shared.idempotency import Started


def start_once(
    key: str,
    message: str,
    voice: dict[str, Any],
    ignore_dlr_silence: bool = False,
    tags: list[str] | None = None,
    sms_window: str | None = None,
    call_window: str | None = None,
    fallback: str = "next_cycle",
) -> Started:
    """Record the cycle (or find the one `key` started) with its `voice` (`voice_message`, `voice_audio_url`:
    reach_cli.voice_options); exit 2 when `key` started a different one, 3 when the
    database stays unreachable after one retry."""
    from sqlalchemy.exc import OperationalError

    from reach_cli.common import EXIT_UNREACHABLE, EXIT_USAGE, fail
    from shared import cycles, idempotency
    from shared.db import session_scope

    request = {
        "message": message,
        **{name: value for name, value in voice.items() if value},
        **({"ignore_dlr_silence": True} if ignore_dlr_silence else {}),
        **({"tags": tags} if tags else {}),
        **({"sms_window": sms_window} if sms_window else {}),
        **({"call_window": call_window} if call_window else {}),
        **({"fallback": fallback} if fallback != "next_cycle" else {}),
    }
    digest = idempotency.request_hash(request)
    for attempt in (1, 2):
        try:
            with session_scope() as session:
                return idempotency.start_once(
                    session,
                    key,
                    digest,
                    lambda: cycles.start_cycle(
                        session,
                        message,
                        **voice,
                        ignore_dlr_silence=ignore_dlr_silence,
                        tags=tags,
                        sms_window=sms_window,
                        call_window=call_window,
                        fallback=cycles.check_fallback(fallback),
                    ),
                )
        except idempotency.KeyReused as exc:
            fail(str(exc).replace(idempotency.HEADER, "--idempotency-key"), EXIT_USAGE)
        except OperationalError as exc:
            if attempt == 2:
                fail(f"database unreachable: {exc.orig}", EXIT_UNREACHABLE)
    raise AssertionError("unreachable")


def no_worker_note() -> str | None:
    """The note for a cycle no worker is there to run, or None."""
    from shared import heartbeat
    from shared.store import get_store

    return None if heartbeat.worker_alive(get_store()) else heartbeat.NO_WORKER
