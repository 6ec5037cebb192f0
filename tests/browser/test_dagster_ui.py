"""The Dagster web UI as a user sees it, after the pipeline ran: lineage, reports, approval,
and a blocking check that failed."""

import re

import dagster as dg
import pytest
from playwright.sync_api import expect

from tests.test_definitions import DESIGN_ASSETS, MONITORING_ASSETS

pytestmark = pytest.mark.browser

# DESIGN.md's asset keys: the public contract the lineage view must show.
ALL_ASSETS = sorted(DESIGN_ASSETS | MONITORING_ASSETS)

# wide and tall enough for an asset page's whole metadata table, unclipped, in one picture
TALL = {"width": 1920, "height": 1500}


def metadata_row(page, key: str):
    """The row of an asset page's metadata table whose key is `key`."""
    return page.locator("tr").filter(has=page.get_by_text(key, exact=True)).first


def fits_in_view(locator) -> bool:
    """The element ends inside its nearest scrolling ancestor: readable without scrolling."""
    return locator.evaluate(
        """element => {
            let box = element.parentElement;
            while (box && getComputedStyle(box).overflowX === "visible") box = box.parentElement;
            const right = box ? box.getBoundingClientRect().right : window.innerWidth;
            return element.getBoundingClientRect().right <= right + 1;
        }"""
    )


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
    # the report's markdown renders as text and a per-class table
    expect(report).to_contain_text(re.compile(r"macro F1: \d\.\d{4} \(95 % CI"))
    table = report.locator("table")
    expect(table.locator("tbody tr")).to_have_count(2)
    assert table.locator("th").all_inner_texts()[:4] == ["class", "precision", "recall", "F1"]
    for key in ("macro_f1", "macro_f1_ci_low", "baseline_macro_f1", "latency_ms_p50"):
        value = metadata_row(page, key).locator("td").last
        expect(value).to_have_text(re.compile(r"^\s*\d+(\.\d+)?\s*$"))
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
    summary = metadata_row(page, "summary").locator("td").last
    # the second run's model against the first run's, which is the champion
    expect(summary).to_have_text(
        re.compile(
            r"^(approved|rejected): macro F1 \d\.\d\d vs champion \d\.\d\d, paired "
            r"[+-]\d\.\d{3} \[CI [+-]\d\.\d{3} to [+-]\d\.\d{3}\](; failed .+)?$"
        )
    )
    assert fits_in_view(summary), "the sentence runs past the metadata table's edge"
    decision = metadata_row(page, "decision")
    expect(decision).to_contain_text(summary.inner_text().strip())
    expect(decision.locator("table th").first).to_have_text("rule")
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
    expect(page.get_by_text(re.compile(pattern)).first).to_be_visible()


def test_drift_report_renders_its_table_and_plot(monitor_run, page, screenshot):
    page.goto(f"{monitor_run}/assets/drift_report")
    row = metadata_row(page, "report")
    row.wait_for()
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.locator("img[alt='text lengths']")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100
    expect(dialog).to_contain_text(re.compile(r"(drift detected|no drift) over \d+ served"))
    assert dialog.locator("table th").all_inner_texts() == ["statistic", "value", "detail", "drift"]
    assert dialog.locator("table tbody tr").count() >= 4
    screenshot(dialog, "drift-report")


def check_status(page, name: str):
    """The status under a check's name in an asset's list of checks."""
    item = page.locator(f"span:has(> div[title='{name}'])").first
    return item.locator(":scope > span").last


def test_failed_blocking_check_is_shown_as_failed(failed_check_run, page, screenshot):
    page.goto(f"{failed_check_run}/assets/raw_texts?view=checks")
    expect(check_status(page, "empty_text_share")).to_have_text("Failed")
    for passed in ("schema", "labels_in_label_set", "text_not_null"):
        expect(check_status(page, passed)).to_have_text("Succeeded")
    # the selected check's page says it blocks and why it failed
    expect(page.get_by_text(re.compile(r"This is a\s+blocking\s+asset check"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"share of empty texts 15\.625%")).first).to_be_visible()
    screenshot(page, "failed-check")
