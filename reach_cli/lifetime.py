"""How long `reach up`'s processes live: no longer than `reach up`, and one `reach up` per var/.

Children end with their parent through Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`), set in each
child between fork and exec: the kernel sends it however the parent dies, SIGKILL and the OOM killer
included, with nothing in the parent left to run. The signal is SIGTERM, what Ctrl-C's shutdown sends too:
the receiver's main process (granian) stops its workers and Celery's
warm shutdown stops its pool and the embedded beat, so grandchildren end in order and no task is cut in
half. A watched pipe would need code in every child (the receiver, Celery, the simulator) to read it; the
death signal needs none. Elsewhere (macOS) there is no such signal and children are not tied: `reach up`
is for trying Reach; production runs each process under compose on Linux.

The lock on var/ is an exclusive `flock` on `var/reach-up.lock`, held while `reach up` runs. Its children
inherit it, so var/ stays held until the last of them has ended, not only until `reach up` did: a second
`reach up` can never run a second beat beside a first one's that is still stopping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from reach_cli.common import EXIT_FAILED, fail

LOCK_FILE = "reach-up.lock"
_PR_SET_PDEATHSIG = 1


def end_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` giving the child SIGTERM when this process dies (None where the system has no such signal)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def hold_var(var_dir: Path) -> IO[str]:
    """Lock `var_dir` for this process (keep the returned file open while running), or exit 1 naming the holder."""
    handle = (var_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        fail(
            f"another reach up (pid {holder}, or processes it started that are still stopping) uses {var_dir}; "
            "stop it first, or give this one its own REACH_VAR_DIR",
            EXIT_FAILED,
        )
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
