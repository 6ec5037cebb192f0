"""The Dagster web UI as a user sees it, after the pipeline ran: lineage, reports, approval,
and a blocking check that failed."""

import re

import dagster as dg
import pytest

from tests.test_definitions import DESIGN_ASSETS, MONITORING_ASSETS

pytestmark = pytest.mark.browser

# DESIGN.md's asset keys: the public contract the lineage view must show.
ALL_ASSETS = sorted(DESIGN_ASSETS | MONITORING_ASSETS)

# tall enough for an asset page's whole metadata table in one picture
TALL = {"width": 1440, "height": 1700}


def metadata_row(page, key: str):
    """The row of an asset page's metadata table whose key is `key`."""
    return page.locator("tr").filter(has=page.get_by_text(key, exact=True)).first


def test_asset_graph_shows_every_asset(dagster_ui, page, screenshot):
    page.goto(f"{dagster_ui}/asset-groups")
    page.get_by_text("monitoring", exact=True).last.wait_for()
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
    for name in ALL_ASSETS:
        node = page.get_by_text(name, exact=True).last
        node.wait_for()
        assert node.is_visible(), name
    page.wait_for_timeout(500)  # let the layout settle for the picture
    screenshot(page, "asset-graph")


def test_evaluation_report_shows_its_table_and_confusion_matrix(dagster_ui, page, screenshot):
    page.set_viewport_size(TALL)
    page.goto(f"{dagster_ui}/assets/evaluation_report")
    report = metadata_row(page, "report")
    report.wait_for()
    # the report's markdown renders as text and a per-class table
    assert re.search(r"macro f1: \d\.\d{4}", report.inner_text())
    table = report.locator("table")
    assert table.locator("th").all_inner_texts()[:4] == ["class", "precision", "recall", "F1"]
    assert table.locator("tbody tr").count() == 2
    for key in ("macro_f1", "macro_f1_ci_low", "baseline_macro_f1", "latency_ms_p50"):
        value = metadata_row(page, key).locator("td").last.inner_text()
        assert re.fullmatch(r"[\d.]+", value.strip()), (key, value)
    screenshot(page, "evaluation-report")

    metadata_row(page, "confusion_matrix").get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.locator("img[alt='confusion matrix']")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100
    screenshot(dialog, "confusion-matrix")


def test_training_curves_are_shown(dagster_ui, page):
    page.goto(f"{dagster_ui}/assets/fine_tuned_model")
    row = metadata_row(page, "curves")
    row.wait_for()
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator("img[alt='training curves']")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100


def test_approval_decision_reads_as_a_sentence(dagster_ui, page, screenshot):
    page.set_viewport_size(TALL)
    page.goto(f"{dagster_ui}/assets/approved_model")
    summary = metadata_row(page, "summary")
    summary.wait_for()
    sentence = summary.locator("td").last.inner_text().strip()
    assert re.fullmatch(
        r"approved: macro F1 \d\.\d\d \[CI \d\.\d\d–\d\.\d\d\], no champion yet", sentence
    ), sentence
    decision = metadata_row(page, "decision")
    assert sentence in decision.inner_text()
    assert decision.locator("table th").first.inner_text() == "rule"
    screenshot(page, "approved-model")


@pytest.mark.parametrize(
    "needle, pattern",
    [
        ("ETA", r"epoch \d+ step \d+/40 loss [\d.]+ [\d.]+ samples/s ETA [\d.]+ min"),
        ("val/macro_f1", r"epoch \d+ step \d+ val/loss [\d.]+ val/macro_f1 [\d.]+"),
        ("test split done", r"test split done: [\d,]+ texts in \d+ s \([\d,.]+ texts/s\)"),
        ("built textops:", r"built textops:\w+ in \d+ s \([\d.]+ MB with the model\)"),
    ],
)
def test_run_log_shows_progress(dagster_ui, pipeline_run, page, needle, pattern):
    instance = dg.DagsterInstance.from_config(pipeline_run["DAGSTER_HOME"])
    run = instance.get_runs(filters=dg.RunsFilter(job_name="pipeline"), limit=1)[0]
    page.goto(f"{dagster_ui}/runs/{run.run_id}")
    page.get_by_placeholder("Filter…").fill(needle)
    line = page.get_by_text(re.compile(pattern)).first
    line.wait_for()
    assert line.is_visible()


def check_status(page, name: str) -> str:
    """The status under a check's name in an asset's list of checks."""
    item = page.locator(f"span:has(> div[title='{name}'])").first
    item.wait_for()
    return item.locator(":scope > span").last.inner_text().strip()


def test_failed_blocking_check_is_shown_as_failed(failed_check_run, page, screenshot):
    page.goto(f"{failed_check_run}/assets/raw_texts?view=checks")
    assert check_status(page, "empty_text_share") == "Failed"
    for passed in ("schema", "labels_in_label_set", "text_not_null"):
        assert check_status(page, passed) == "Succeeded", passed
    # the selected check's page says it blocks and why it failed
    page.get_by_text("This is a", exact=False).first.wait_for()
    assert "blocking" in page.get_by_text("asset check.", exact=False).first.inner_text()
    assert page.get_by_text(re.compile(r"share of empty texts 15\.625%")).first.is_visible()
    screenshot(page, "failed-check")
