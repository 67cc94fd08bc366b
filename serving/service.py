"""The BentoML service of callback-timing, for ``bentoml serve`` / ``bentoml build`` from this
folder (``bentofile.yaml``). The service itself lives in the package
(:mod:`callback_timing.service`) so that ``callback-timing serve`` runs it from anywhere.
"""

from callback_timing.service import CallbackTiming

__all__ = ["CallbackTiming"]
