"""The BentoML service of callback-timing, for ``bentoml serve`` / ``bentoml build`` from the
repository root (``serving/bentofile.yaml``). The service itself lives in the package
(:mod:`callback_timing.service`) so that ``callback-timing serve`` runs it from anywhere; in a
built Bento the package's source sits beside this folder, under ``src/``.
"""

import sys
from pathlib import Path

try:
    import callback_timing  # noqa: F401  (installed: pip install -e . or the Bento's image)
except ModuleNotFoundError:  # a Bento: the source copied beside serving/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from callback_timing.service import CallbackTiming  # noqa: E402

__all__ = ["CallbackTiming"]
