"""BentoML's OpenAPI page of the served model: opened at /docs, one request sent through it."""

import json

import httpx
import pytest

pytestmark = pytest.mark.browser

TEXTS = ["@user such a wonderful day, happy too", "@user such a horrible day, cruel too"]


def test_docs_page_sends_a_classify_request(bento_service, page, screenshot):
    page.goto(f"{bento_service}/docs")
    operation = page.locator("#operations-Service_APIs-textops__classify")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    body = operation.locator("textarea.body-param__text")
    assert json.loads(body.input_value())["texts"][0] == "What a wonderful day!"  # the example
    body.fill(json.dumps({"texts": TEXTS}))
    with page.expect_response(lambda r: r.url.endswith("/classify")) as answer:
        operation.get_by_role("button", name="Execute").click()
    assert answer.value.status == 200
    predictions = answer.value.json()
    assert len(predictions) == 2
    label_names = httpx.post(f"{bento_service}/model", json={}, timeout=30).json()["label_names"]
    for prediction in predictions:
        assert sorted(prediction["probabilities"]) == sorted(label_names)
        assert prediction["label"] in label_names
    # the page shows the server's answer
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    body = operation.locator(".live-responses-table .highlight-code pre").first.inner_text()
    assert json.loads(body) == predictions
    # the operation from its title down to the server's answer
    top = page_box(operation)
    bottom = page_box(operation.locator(".live-responses-table").first)
    height = bottom["y"] + bottom["height"] - top["y"]
    screenshot(page, "bentoml-docs", full_page=True, clip={**top, "height": height})


def page_box(locator) -> dict[str, float]:
    """An element's box in page (not viewport) coordinates."""
    return locator.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; }"
    )
