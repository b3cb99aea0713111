"""The receiver's gunicorn logger class: gunicorn's, building only the access-log atoms the format names.

For every request gunicorn's `Logger.atoms()` builds ~20 atoms (the time with `strftime`, the user from
the Authorization header, the process id) plus one per request header, response header and environ key,
then copies them all to escape quotes; Reach's format (reach_cli/processes.py, ACCESS_LOG_FORMAT) names
six. That was 65 µs of CPU per access line in process, more than the fast path's own Python work for a
delivery report (~40 µs; bench/RESULTS.md, section 1, round 3). Here, when every atom the format names
is one of the plain ones below, only those are built, as gunicorn defines them; a format naming a header or
environ atom (`%({x-real-ip}i)s`) gets gunicorn's full set, as before. The line, its quoting and the
redaction of secrets (web/gunicorn_conf.py) are unchanged.

`--logger-class web.gunicorn_log.Logger`: loaded by gunicorn's master, so it imports nothing of the app.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gunicorn import glogging

Atom = Callable[[Any, dict[str, Any], timedelta], Any]


def _status(resp: Any, _environ: dict[str, Any], _took: timedelta) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any, _environ: dict[str, Any], _took: timedelta) -> str:
    return str(resp.sent) if getattr(resp, "sent", None) is not None else "-"


def _environ(key: str, default: Any = None) -> Atom:
    return lambda _resp, environ, _took: environ.get(key, default)


#: gunicorn's own definitions (glogging.Logger.atoms) of the atoms that need no header or environ scan.
PLAIN_ATOMS: dict[str, Atom] = {
    "h": _environ("REMOTE_ADDR", "-"),
    "l": lambda _resp, _environ, _took: "-",
    "s": _status,
    "m": _environ("REQUEST_METHOD"),
    "U": _environ("PATH_INFO"),
    "q": _environ("QUERY_STRING"),
    "H": _environ("SERVER_PROTOCOL"),
    "b": _sent,
    "B": lambda resp, _environ, _took: getattr(resp, "sent", None),
    "T": lambda _resp, _environ, took: took.seconds,
    "D": lambda _resp, _environ, took: took.seconds * 1000000 + took.microseconds,
    "M": lambda _resp, _environ, took: took.seconds * 1000 + int(took.microseconds / 1000),
    "L": lambda _resp, _environ, took: f"{took.seconds}.{took.microseconds:06d}",
    "p": lambda _resp, _environ, _took: f"<{os.getpid()}>",
}

_NAMED = re.compile(r"%\(([^)]*)\)")


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        named = set(_NAMED.findall(cfg.access_log_format or ""))
        # None: the format names an atom built only by gunicorn's full set (a header, the time, the user...).
        self.plain_atoms = [(name, PLAIN_ATOMS[name]) for name in named] if named <= PLAIN_ATOMS.keys() else None

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
        if self.plain_atoms is None:
            return super().atoms(resp, req, environ, request_time)
        return {name: atom(resp, environ, request_time) for name, atom in self.plain_atoms}
