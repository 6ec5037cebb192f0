"""The code location loads, names every asset of the design, and validates from the CLI."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration import definitions

ROOT = Path(__file__).resolve().parents[1]
DESIGN_ASSETS = {
    "raw_texts",
    "text_splits",
    "fine_tuned_model",
    "evaluation_report",
    "serving_variants",
    "approved_model",
    "served_model",
    "bento",
}
MONITORING_ASSETS = {"serving_log", "drift_report"}


def test_every_asset_is_defined_and_in_the_pipeline_job():
    defs = definitions.defs
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == DESIGN_ASSETS | MONITORING_ASSETS
    for name in ("pipeline", "retrain"):
        job = defs.resolve_job_def(name)
        assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == DESIGN_ASSETS


def test_blocking_checks_guard_the_training_data():
    specs = {
        (s.asset_key.to_user_string(), s.name): s.blocking
        for c in definitions.ASSET_CHECKS
        for s in c.check_specs
    }
    assert specs[("raw_texts", "labels_in_label_set")]
    assert specs[("text_splits", "no_text_in_two_splits")]
    assert not specs[("text_splits", "class_share_shift")]


def test_unknown_environment_is_named():
    with pytest.raises(ValueError, match="TEXTOPS_ENV='prod' is not one of gcp, local"):
        definitions.resources_for("prod")


def test_definitions_validate_cli(tmp_path):
    result = subprocess.run(
        [
            Path(sys.executable).parent / "dagster",
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**dict(os.environ), "DAGSTER_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_no_side_effects_at_import(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_HOME", str(tmp_path / "home"))
    code = "import orchestration.definitions"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        timeout=120,
        env={**dict(os.environ), "TEXTOPS_HOME": str(tmp_path / "home")},
    )
    assert not (tmp_path / "home").exists()
    assert isinstance(definitions.defs, dg.Definitions)


def test_the_configuration_reference_is_the_config_classes():
    from orchestration import reference

    document = reference.DOC.read_text()
    assert document == reference.with_table(document), (
        "docs/configuration.md's run config table differs from the config classes: run "
        "`python -m orchestration.reference` and commit the result"
    )
    for node in [*definitions.ASSETS, *definitions.ASSET_CHECKS]:
        config = node.op.config_schema.config_type
        for field in getattr(config, "fields", None) or {}:
            assert f"| `{node.op.name}` | `{field}` |" in document, f"{node.op.name}.{field}"


def test_the_reference_command_rewrites_stale_tables_into_the_committed_page(tmp_path):
    """`python -m orchestration.reference`, as the docs tell a contributor to run it, turns a
    page whose generated tables are stale into the committed page, and leaves the rest."""
    import subprocess
    import sys

    from orchestration import reference

    committed = reference.DOC.read_text()
    stale = committed
    for begin, end in [
        (reference.BEGIN, reference.END),
        (reference.PIPELINE_BEGIN, reference.PIPELINE_END),
        (reference.SERVICE_BEGIN, reference.SERVICE_END),
    ]:
        start, stop = stale.index(begin) + len(begin), stale.index(end)
        stale = f"{stale[:start]}\n| stale |\n{stale[stop:]}"
    page = tmp_path / "configuration.md"
    page.write_text(stale)
    subprocess.run(
        [sys.executable, "-m", "orchestration.reference", str(page)],
        cwd=reference.DOC.parents[1],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert page.read_text() == committed


def test_every_pipeline_setting_is_read_by_its_variable_with_its_declared_default(monkeypatch):
    from assets.settings import PipelineSettings, setting
    from textops_core.settings import variable

    for name, field in PipelineSettings.model_fields.items():
        monkeypatch.delenv(variable(name), raising=False)
        assert setting(name) == field.default
    monkeypatch.setenv("TEXTOPS_MONITOR_WINDOW_HOURS", "0.5")
    assert setting("monitor_window_hours") == 0.5
    for bad in ["0", "inf", "soon"]:
        monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", bad)
        with pytest.raises(ValueError, match=f"TEXTOPS_DOWNLOAD_DEADLINE_S='{bad}'"):
            setting("download_deadline_s")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    anchors = set()
    for title in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
    return anchors


def test_every_link_between_the_documents_lands():
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            landing = (document.parent / path).resolve() if path else document
            if not landing.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and anchor not in heading_anchors(landing.read_text()):
                broken.append(f"{document.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for document in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{document.name})" in readme, f"the README does not link {document.name}"


def test_the_docker_executor_is_dagster_dockers():
    from dagster_docker import docker_executor

    assert definitions.executor_for("docker") is docker_executor


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="TEXTOPS_EXECUTOR='spark' is not one of"):
        definitions.executor_for("spark")
    assert definitions.executor_for("multiprocess") is None


def test_readme_set_up_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Quickstart")
    quickstart = readme[start : readme.index("\n## ", start + 1)]
    install, tests = [block.split("\n")[1] for block in quickstart.split("```bash")[1:3]]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests == ci[-1] == ".venv/bin/python -m pytest"
    assert install.startswith("bash scripts/install.sh && ")
    assert "bash scripts/install.sh" in ci
    assert "dagster job execute -m orchestration.definitions -j pipeline" in install


def test_readme_screenshots_exist():
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^]]*\]\((docs/images/[^)]+)\)", readme)
    assert len(images) >= 6
    for image in images:
        assert (ROOT / image).is_file(), image


def test_the_deploy_guides_run_queue_and_pools_load(tmp_path, monkeypatch):
    """docs/deploy.md's instance settings as Dagster reads them: one retrain at a time through
    the run queue, one training at a time through the pool."""
    import dagster as dg

    guide = (ROOT / "docs" / "deploy.md").read_text()
    start = guide.index("concurrency:\n  pools:")
    (tmp_path / "dagster.yaml").write_text(guide[start : guide.index("```", start)])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.tag_concurrency_limits == [{"key": "textops/job", "value": "retrain", "limit": 1}]
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_every_variable_the_code_reads_is_documented():
    """Each TEXTOPS_* variable named in the product's code has its default and meaning in
    docs/configuration.md (or, for deployments, docs/deploy.md)."""
    internal = {"TEXTOPS_START_TAG"}  # the service sets it for its own workers
    documented = (ROOT / "docs" / "configuration.md").read_text()
    documented += (ROOT / "docs" / "deploy.md").read_text()
    named = set()
    for folder in ("assets", "bento", "orchestration", "data_checks"):
        for module in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r"\"(TEXTOPS_[A-Z0-9_]+)\"", module.read_text()))
    from assets.settings import PipelineSettings
    from textops_core.settings import ServiceSettings, variable

    for settings in (PipelineSettings, ServiceSettings):  # declared in a class, all of them
        named |= {variable(field) for field in settings.model_fields}
    assert len(named) > 50
    assert sorted(n for n in named - internal if f"`{n}`" not in documented) == []


def test_the_service_is_imported_by_nothing_and_the_core_imports_no_stage():
    """bento/ is the service alone: the pipeline reaches what it shares with the service through
    textops_core/, which itself imports neither the pipeline nor the service."""
    import ast

    def imported(folder: str) -> set[tuple[str, str]]:
        found = set()
        for module in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                found |= {(str(module.relative_to(ROOT)), n.split(".")[0]) for n in names}
        return found

    pipeline = imported("assets") | imported("orchestration") | imported("data_checks")
    assert sorted(m for m, top in pipeline if top == "bento") == []
    core = imported("textops_core")
    assert sorted(m for m, top in core if top in {"assets", "orchestration", "bento"}) == []
