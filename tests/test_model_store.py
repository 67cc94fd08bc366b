"""BentoML model store round trips in a temporary ``$BENTOML_HOME``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from callback_timing import model_store
from callback_timing.bundle import ModelBundle
from callback_timing.schema import SchemaError
from tests.conftest import tiny_bundle

# bentoml 1.4 builds a gitwildmatch PathSpec at import time, which recent pathspec deprecates
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


@pytest.fixture(autouse=True)
def bentoml_home(tmp_path, monkeypatch):
    """A fresh BentoML home per test (no analytics calls, nothing in ~/bentoml)."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/unused.db")
    return tmp_path / "bentoml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fitted model, its bundle folder and a held-out feature frame."""
    folder = tmp_path_factory.mktemp("bundle") / "bundle"
    return tiny_bundle(folder, n_calls=1200, seed=5, version="run-1")


def test_save_and_load_round_trip(trained, bentoml_home):
    model, folder, X_test = trained
    tag = model_store.save_to_bentoml(
        folder, labels={"stage": "dev"}, metadata={"log_loss": 0.61, "run_id": "abc"}
    )
    name, version = tag.split(":")
    assert name == model_store.MODEL_NAME and version
    local = model_store.bundle_from_bentoml(tag)
    assert local.is_relative_to(bentoml_home / "models")
    info = yaml.safe_load((local / "model.yaml").read_text())
    assert info["labels"] == {"stage": "dev"}
    assert info["metadata"]["log_loss"] == 0.61
    bundle = ModelBundle.load(local)
    assert bundle.version == "run-1"
    np.testing.assert_allclose(bundle.model.p_answer(X_test), model.p_answer(X_test))
    assert len(bundle.history) == len(ModelBundle.load(folder).history)


def test_two_saves_give_two_versions_and_latest_is_newest(trained, tmp_path):
    _, folder, _ = trained
    second = tmp_path / "second"
    ModelBundle.load(folder).save(second)
    meta = json.loads((second / "metadata.json").read_text())
    (second / "metadata.json").write_text(json.dumps({**meta, "version": "run-2"}))

    first_tag = model_store.save_to_bentoml(folder)
    second_tag = model_store.save_to_bentoml(second)
    assert first_tag != second_tag
    assert model_store.list_models() == [second_tag, first_tag]
    latest = model_store.bundle_from_bentoml()
    assert ModelBundle.load(latest).version == "run-2"
    assert ModelBundle.load(model_store.bundle_from_bentoml(first_tag)).version == "run-1"


def test_store_follows_bentoml_home(trained, tmp_path, monkeypatch):
    model_store.save_to_bentoml(trained[1], name="elsewhere-test")
    assert len(model_store.list_models("elsewhere-test")) == 1
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "other"))
    assert model_store.list_models("elsewhere-test") == []


def test_missing_model_and_non_bundle_raise(tmp_path):
    with pytest.raises(SchemaError, match="no BentoML model 'nothing:latest'"):
        model_store.bundle_from_bentoml("nothing:latest")
    with pytest.raises(SchemaError, match="is not a model bundle"):
        model_store.save_to_bentoml(tmp_path)
    assert model_store.list_models("nothing") == []
