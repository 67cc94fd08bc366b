"""How a console command of this package ends: :func:`leave`.

A command that used pyarrow (every CSV and Parquet read) can be killed *after* its work, as
the C runtime tears down Arrow's thread pools at exit: ``terminate called without an active
exception`` and exit code -6 (SIGABRT) instead of 0 or 1, about once in 200 runs on a busy
machine (apache/arrow#34314). A scheduler or a dialer's script would take a finished job for a
failed one. :func:`leave` does Python's own exit work and then ends the process before that
teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def exit_code(code: object) -> int:
    """The process exit code of ``SystemExit(code)``, as the interpreter would use it (a text
    is printed to stderr and gives 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def leave(code: int) -> NoReturn:
    """End a console command with exit code ``code``: the other threads are waited for and
    the ``atexit`` handlers run (MLflow, logging, temporary folders), in the interpreter's
    order, the output is flushed; then the process ends without the C runtime's teardown of
    native thread pools. For entry points only, never inside a library call."""
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls at exit
    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_handlers is None:  # another Python: the ordinary exit
        sys.exit(code)
    shutdown()
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`| head`) has nothing to flush
            stream.flush()
    os._exit(code)
