"""The parts of BentoML that textops uses beyond its public API, pinned: an upgrade that moves
one fails here, naming what moved and the module of textops that relies on it, before anything
fails in a registry or a service.

- textops_core/registry.py: the BentoML home and models folder (BentoMLContainer), publishing into a
  staging store (`bentoml.models.create(_model_store=ModelStore(...))`), and the store's layout
  (`<name>/<version>/model.yaml` with labels, metadata and creation_time),
  which relabel() rewrites and read_entries() reads without BentoML.
- bento/http.py: BentoML's timeout middleware, replaced where the server app looks it up
  (`bentoml._internal.server.http.traffic.TimeoutMiddleware`), and its HTTP app's logger."""

import importlib
import inspect
from pathlib import Path

import bentoml
import pytest
import yaml


def moved(what: str, module: str) -> str:
    return (
        f"BentoML {bentoml.__version__} moved {what}, which {module} relies on: check that "
        "module against this version before upgrading"
    )


def test_the_container_gives_the_home_and_the_models_folder():
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer
    except ImportError:
        pytest.fail(moved("bentoml._internal.configuration.containers", "textops_core/registry.py"))
    assert Path(BentoMLContainer.bentoml_home.get()).is_absolute(), moved(
        "BentoMLContainer.bentoml_home", "textops_core/registry.py"
    )
    store = BentoMLContainer.model_store.get()
    assert isinstance(getattr(store, "_path", None), str | Path), moved(
        "the model store's _path", "textops_core/registry.py (models_dir)"
    )


def test_a_model_is_created_in_a_store_of_our_choosing_in_the_layout_we_read(tmp_path):
    from bentoml._internal.models.model import ModelStore

    parameters = inspect.signature(bentoml.models.create).parameters
    assert "_model_store" in parameters, moved(
        "bentoml.models.create(_model_store=)", "textops_core/registry.py (publish)"
    )
    with bentoml.models.create(
        "contract", labels={"approved": "pending"}, metadata={"k": 1},
        _model_store=ModelStore(str(tmp_path)),
    ) as model:  # fmt: skip
        (Path(model.path) / "weights.bin").write_bytes(b"w")
    folder = tmp_path / "contract" / model.tag.version
    info_file = folder / "model.yaml"
    assert (folder / "weights.bin").is_file(), moved("where a model's files go", "registry.py")
    assert info_file.is_file(), moved(
        "model.yaml", "textops_core/registry.py (relabel, read_entries)"
    )
    info = yaml.safe_load(info_file.read_text())
    assert {"labels", "metadata", "creation_time"} <= set(info), moved(
        "model.yaml's labels, metadata or creation_time", "textops_core/registry.py (read_entries)"
    )
    assert info["labels"] == {"approved": "pending"} and info["metadata"] == {"k": 1}

    # relabel() rewrites model.yaml's labels; BentoML reads them back from a store of that folder
    info["labels"]["approved"] = "true"
    info_file.write_text(yaml.safe_dump(info, sort_keys=False))
    reread = ModelStore(str(tmp_path)).get(str(model.tag))
    assert reread.info.labels == {"approved": "true"}, moved(
        "how a model's labels are read from model.yaml", "textops_core/registry.py (relabel)"
    )


def test_the_timeout_middleware_is_looked_up_where_it_is_replaced():
    try:
        traffic = importlib.import_module("bentoml._internal.server.http.traffic")
    except ImportError:
        pytest.fail(moved("bentoml._internal.server.http.traffic", "bento/http.py"))
    middleware = getattr(traffic, "TimeoutMiddleware", None)
    assert isinstance(middleware, type), moved("TimeoutMiddleware", "bento/http.py")
    assert list(inspect.signature(middleware.__init__).parameters) == ["self", "app", "timeout"], (
        moved("TimeoutMiddleware's constructor (app, timeout)", "bento/http.py (AnsweredTimeout)")
    )
    base_app = importlib.import_module("bentoml._internal.server.base_app")
    assert "from .http.traffic import TimeoutMiddleware" in inspect.getsource(base_app), moved(
        "where the server app takes TimeoutMiddleware from", "bento/http.py (use_answered_timeout)"
    )


def test_the_http_app_logger_is_the_one_we_quiet():
    from bento.http import BENTOML_HTTP_LOGGER

    try:
        importlib.import_module(BENTOML_HTTP_LOGGER)
    except ImportError:
        pytest.fail(moved(BENTOML_HTTP_LOGGER, "bento/http.py (the access log switch)"))
