"""The BentoML model store: model bundles as versioned BentoML models.

A bundle folder (:class:`~callback_timing.bundle.ModelBundle`) is copied as it is into a new
BentoML model, so the model's local folder *is* a bundle: ``ModelBundle.load(folder)`` reads
it, and a BentoML service can load ``callback-timing-answer:latest`` the same way. BentoML only
adds its ``model.yaml`` next to the bundle files.

The store lives in ``$BENTOML_HOME/models`` (``~/bentoml/models`` by default). BentoML resolves
its home once per process and caches it; these functions read ``$BENTOML_HOME`` on every call
instead, so a test or a script that points it elsewhere is honoured even after BentoML was
used in the same process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# no usage events to the vendor from a contact centre's machines (BentoML's own opt-out switch)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import bentoml  # noqa: E402
from bentoml._internal.models.model import ModelStore  # noqa: E402
from bentoml.exceptions import NotFound  # noqa: E402

from callback_timing.schema import SchemaError  # noqa: E402

#: Default BentoML model name of the answer model.
MODEL_NAME = "callback-timing-answer"


def bentoml_home() -> Path:
    """BentoML's home folder: ``$BENTOML_HOME``, else ``~/bentoml``."""
    return Path(os.path.expanduser(os.environ.get("BENTOML_HOME", "~/bentoml")))


def _store() -> ModelStore:
    models = bentoml_home() / "models"
    models.mkdir(parents=True, exist_ok=True)
    return ModelStore(models)


def save_to_bentoml(
    bundle_dir: Path,
    name: str = MODEL_NAME,
    labels: dict[str, str] | None = None,
    metadata: dict | None = None,
) -> str:
    """Copy a bundle folder into a new version of BentoML model ``name``.

    Parameters
    ----------
    bundle_dir : a folder written by :meth:`ModelBundle.save`.
    name : BentoML model name (lower case letters, digits, ``-``, ``_``, ``.``).
    labels : string labels for managing models (e.g. ``{"stage": "dev"}``).
    metadata : JSON-like facts stored in ``model.yaml`` (e.g. metrics, MLflow run id).

    Returns
    -------
    The new model's tag, ``"name:version"``.

    Raises
    ------
    SchemaError
        If ``bundle_dir`` holds no bundle (no ``metadata.json``).
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "metadata.json").is_file():
        raise SchemaError(f"{bundle_dir} is not a model bundle (no metadata.json)")
    store = _store()
    with bentoml.models.create(
        name, labels=labels or {}, metadata=metadata or {}, _model_store=store
    ) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return str(model.tag)


def bundle_from_bentoml(tag: str = f"{MODEL_NAME}:latest") -> Path:
    """The local folder of BentoML model ``tag``, readable by :meth:`ModelBundle.load`.

    Raises
    ------
    SchemaError
        If no such model is in the store.
    """
    try:
        model = bentoml.models.get(tag, _model_store=_store())
    except NotFound as exc:
        raise SchemaError(f"no BentoML model {tag!r} in {bentoml_home()}: {exc}") from None
    return Path(model.path)


def list_models(name: str = MODEL_NAME) -> list[str]:
    """Tags (``"name:version"``) of every version of model ``name``, newest first."""
    try:
        models = bentoml.models.list(name, _model_store=_store())
    except NotFound:
        return []
    models.sort(key=lambda m: m.creation_time, reverse=True)
    return [str(m.tag) for m in models]
