"""A real `dagster dev` over a graph materialized on small data, and headless Chromium."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import SHARED_DATA, free_port, graph_run_config, write_tweeteval
from tests.processes import BIN, ROOT, bentoml_serve, running, write_dagster_yaml

CHROMIUM = Path(os.environ.get("TEXTOPS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots land here (CI uploads the folder); docs/images/ holds the README's copies.
SCREENSHOTS = Path(os.environ.get("TEXTOPS_SCREENSHOTS", ROOT / "test-artifacts" / "browser"))
# Real tweets when ../shared has them (numbers in the screenshots look like a real run), a few
# steps of training either way.
QUICK = {
    "fine_tuned_model": {
        "max_steps": 40,
        "max_length": 64,
        "checkpoint_every_n_steps": 20,
        "progress_every_s": 2,
    },
    "evaluation_report": {"latency_samples": 8, "bootstrap_resamples": 200},
}


def cli(env: dict[str, str], *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    options = ["-c", str(config)] if config else []
    return subprocess.run(
        [str(BIN / "dagster"), *args, "-m", "orchestration.definitions", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(target, name: str, **options) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        target.screenshot(path=str(path), **options)
        return path

    return save


@pytest.fixture(scope="session")
def textops_env(tmp_path_factory) -> dict[str, str]:
    """Environment of one textops installation: Dagster instance, store, BentoML store."""
    root = tmp_path_factory.mktemp("textops")
    home = root / "dagster_home"
    home.mkdir()
    write_dagster_yaml(home)
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(root / "store"),
        "TEXTOPS_CACHE": str(root / "cache"),
        "TEXTOPS_LANDING": str(root / "landing"),
        "TEXTOPS_SERVING_LOG": str(root / "serving_log"),
        "BENTOML_HOME": str(root / "bentoml"),
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "TEXTOPS_ROOT": str(root),
    }


@pytest.fixture(scope="session")
def pipeline_run(textops_env) -> dict[str, str]:
    """The README's main job, `dagster job execute -j pipeline`, raw data to bento, twice: the
    second run trains another model (another seed) that the gate compares with the first."""
    root = Path(textops_env["TEXTOPS_ROOT"])
    real = SHARED_DATA / "hate"
    if (real / "train_text.txt").is_file():
        config = graph_run_config(real, raw_texts={"max_rows_per_split": 300}, **QUICK)
    else:
        config = graph_run_config(write_tweeteval(root / "data", sizes=(160, 40, 40)), **QUICK)
    for seed in (42, 7):
        config["ops"]["fine_tuned_model"]["config"]["seed"] = seed
        run_config = root / f"pipeline-{seed}.yaml"
        run_config.write_text(yaml.safe_dump(config))
        result = cli(textops_env, "job", "execute", "-j", "pipeline", config=run_config)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return textops_env


@pytest.fixture(scope="session")
def dagster_ui(pipeline_run) -> Iterator[str]:
    """`dagster dev` on 127.0.0.1 over the instance the pipeline ran in; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        pipeline_run,
        Path(pipeline_run["TEXTOPS_ROOT"]) / "dagster-dev.log",
        ready_url=f"{base}/server_info",
    ):
        yield base


@pytest.fixture(scope="session")
def failed_check_run(dagster_ui, textops_env) -> str:
    """raw_texts + text_splits on data with 25 % empty train texts: the blocking
    empty_text_share check fails, so text_splits does not run."""
    root = Path(textops_env["TEXTOPS_ROOT"])
    bad = write_tweeteval(root / "bad", sizes=(40, 12, 12))
    lines = (bad / "train_text.txt").read_text().splitlines()
    (bad / "train_text.txt").write_text(
        "".join(("" if i % 4 == 0 else text) + "\n" for i, text in enumerate(lines))
    )
    run_config = root / "bad.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {"raw_texts": {"config": {"source": str(bad)}}}}))
    result = cli(
        textops_env, "asset", "materialize", "--select", "raw_texts,text_splits", config=run_config
    )
    assert result.returncode != 0
    assert "empty_text_share" in result.stdout + result.stderr
    return dagster_ui


@pytest.fixture(scope="session")
def bento_service(pipeline_run) -> Iterator[str]:
    """`bentoml serve` of the model the pipeline approved; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(
        bentoml_serve(port),
        pipeline_run,
        Path(pipeline_run["TEXTOPS_ROOT"]) / "bentoml-serve.log",
        ready_url=f"{base}/readyz",
    ):
        yield base


@pytest.fixture(scope="session")
def monitor_run(bento_service, dagster_ui, pipeline_run) -> str:
    """Traffic unlike the training tweets through the service, then the `monitor` job over
    the service's prediction log; the UI's base URL."""
    for start in range(0, 60, 20):
        texts = [
            f"Order {i} arrived {i % 5 + 2} days late, the box was crushed and the charger "
            f"is missing. I want a refund for item {1000 + i}."
            for i in range(start, start + 20)
        ]
        response = httpx.post(f"{bento_service}/classify", json={"texts": texts}, timeout=60)
        assert response.status_code == 200, response.text
    result = cli(pipeline_run, "job", "execute", "-j", "monitor")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dagster_ui
