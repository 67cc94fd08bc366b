"""Run the test suite as it will run some days from now: ``make test-later [DAYS=400]``.

The project keeps dates that age: a 12-month retention purge, simulated histories dated
from today, demo traffic ending before now. A test that pins a date the purge will one day
pass, or code that counts from a fixed year, fails only months later, on a CI run nobody
expects to fail. This moves every clock forward with `libfaketime
<https://github.com/wolfcw/libfaketime>`_ (``LD_PRELOAD``; the wall clock only, not the
monotonic one that timeouts use) and runs pytest:

    .venv/bin/python -m tests.time_travel DAYS [pytest options...]

As a pytest plugin (``-p tests.time_travel``, which the command adds) it keeps the moved
clock in subprocesses the tests start with an environment of their own (the CLI and
server tests give a short one), and keeps it out of chromium, which hangs under it.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: The variables that move a process's clock (set by :func:`main` for its pytest).
CLOCK_VARIABLES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "FAKETIME", "DONT_FAKE_MONOTONIC",
                   "FAKETIME_NO_CACHE", "FAKETIME_FORCE_MONOTONIC_FIX")


def main(argv: list[str]) -> None:
    """``DAYS [pytest options]``: replace this process by pytest with clocks ``DAYS`` ahead."""
    if not argv or not argv[0].isdigit():
        sys.exit("usage: python -m tests.time_travel DAYS [pytest options]")
    try:
        import libfaketime
    except ImportError:
        sys.exit("libfaketime is not installed: .venv/bin/pip install libfaketime")
    _, env = libfaketime.get_reload_information()
    env = {**os.environ, **env, "FAKETIME": f"+{int(argv[0])}d"}
    command = [sys.executable, "-m", "pytest", "-p", "tests.time_travel", *argv[1:]]
    os.execve(sys.executable, command, env)


_MOVED = {k: os.environ[k] for k in CLOCK_VARIABLES if k in os.environ}

if _MOVED.get("FAKETIME") and __name__ != "__main__":  # loaded by pytest, clocks moved
    _popen_init = subprocess.Popen.__init__

    def _popen(self, args, *rest, env=None, **kw):  # noqa: ANN001 - Popen's own signature
        if env is not None:
            env = {**env, **_MOVED}
        _popen_init(self, args, *rest, env=env, **kw)

    subprocess.Popen.__init__ = _popen  # type: ignore[method-assign]

    try:
        from playwright.sync_api._generated import BrowserType
    except ImportError:  # pragma: no cover - the dev install has it
        pass
    else:
        _launch = BrowserType.launch

        def _launch_real_clock(self, *args, **kw):  # noqa: ANN001
            kw["env"] = {k: v for k, v in os.environ.items() if k not in _MOVED}
            return _launch(self, *args, **kw)

        BrowserType.launch = _launch_real_clock  # type: ignore[method-assign]


if __name__ == "__main__":
    main(sys.argv[1:])
