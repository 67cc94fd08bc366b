"""The framework's floor for /rank: a BentoML service doing ONE 192-row XGBoost prediction.

``benchmarks/bench_serve.py`` serves it next to the real service and compares the two: the
same request body, the same framework defaults (one worker, one API thread, no batching,
access log and metrics on), but none of the ranking work except the model call itself.

- ``$BARE_MODEL_DIR``: a model bundle folder written by ``callback-timing train`` (required);
- ``$BARE_ACCESS_LOG=0``: turn BentoML's access log off (default: on, as BentoML ships);
- ``$BARE_ASYNC=1``: declare the API ``async def`` (runs in the event loop; default: a plain
  ``def``, which BentoML runs in its worker thread pool).

    cd /work/main && BARE_MODEL_DIR=DIR .venv/bin/python -m bentoml serve \\
        benchmarks.bare_service:BareService --port 3000

``POST /rank`` takes the body of the real service's ``/rank`` (``contact`` with its
``contact_id``; every other field optional, unknown fields ignored) and answers
``{"p": [three highest answer probabilities of 192 slots]}``.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np

#: Slots of one 48 h request (15-minute slots over two days), the rows of one prediction.
ROWS = 192
ACCESS_LOG = os.environ.get("BARE_ACCESS_LOG", "1") != "0"
ASYNC_API = os.environ.get("BARE_ASYNC", "0") == "1"


def slot_matrix(model, rows: int = ROWS, seed: int = 0) -> np.ndarray:
    """A float32 ``rows x features`` matrix the booster reads (valid codes for categoricals)."""
    rng = np.random.default_rng(seed)
    names = model.feature_names_
    matrix = rng.random((rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        categories = (model.categories_ or {}).get(name)
        if categories:
            matrix[:, j] = rng.integers(0, len(categories), rows)
    return np.ascontiguousarray(matrix)


@bentoml.service(
    name="bare_rank",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": ACCESS_LOG}},
)
class BareService:
    """Loads the bundle's booster once; ``/rank`` predicts a pre-built 192-row matrix."""

    def __init__(self) -> None:
        from callback_timing.bundle import ModelBundle

        folder = os.environ.get("BARE_MODEL_DIR")
        if not folder:
            raise RuntimeError("set BARE_MODEL_DIR to a model bundle folder")
        model = ModelBundle.load(folder).model
        # a single-threaded copy, as the policy uses for a few hundred rows: with the load
        # generator on the other core, a second thread only waits for it
        self.booster = model.booster_.copy()
        self.booster.set_param({"nthread": 1})
        self.trees = (0, model.best_iteration_ + 1)
        self.matrix = slot_matrix(model)
        self.predict()  # first call allocates XGBoost's predictor: not on a request

    def predict(self) -> dict[str, list[float]]:
        p = self.booster.inplace_predict(self.matrix, iteration_range=self.trees)
        return {"p": np.sort(p)[-3:][::-1].tolist()}

    if ASYNC_API:

        @bentoml.api(route="/rank")
        async def rank(
            self,
            contact: dict[str, Any],
            request_id: str | None = None,
            now: str | None = None,
            horizon_hours: float = 48.0,
        ) -> dict[str, list[float]]:
            return self.predict()

    else:

        @bentoml.api(route="/rank")
        def rank(
            self,
            contact: dict[str, Any],
            request_id: str | None = None,
            now: str | None = None,
            horizon_hours: float = 48.0,
        ) -> dict[str, list[float]]:
            return self.predict()
