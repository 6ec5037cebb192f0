"""A task's official metric, as its benchmark scores it, through the report, the serving
variants' parity and the gate."""

from tests.conftest import graph_run_config, materialize_selected
from tests.integration.test_data_assets import failure_message

STEPS = ["evaluation_report", "serving_variants", "approved_model"]


def evaluate(graph, metric: str):
    return materialize_selected(
        graph["store"],
        STEPS,
        run_config=graph_run_config(
            graph["source"], set(STEPS), evaluation_report={"metric": metric}
        ),
        raise_on_error=False,
        instance=graph["instance"],
    )


def test_the_f1_of_one_class_is_the_metric_of_report_parity_and_gate(approved_graph):
    result = evaluate(approved_graph, "f1:negative")
    assert result.success, failure_message(result)
    report = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert report["metric"].value == "f1:negative"
    assert report["f1:negative"].value == report["f1/negative"].value
    assert "F1 of negative" in report["report"].value
    serving = approved_graph["store"].read_json(
        result.output_for_node("serving_variants").path + "/serving.json"
    )
    assert serving["metric"] == "f1:negative"
    gate = result.asset_materializations_for_node("approved_model")[0].metadata
    assert gate["summary"].value.startswith("approved: F1 of negative ")
    assert "challenger_f1:negative" in gate


def test_a_metric_naming_another_class_stops_before_any_work(approved_graph):
    result = evaluate(approved_graph, "mean_f1:positive,neutral")
    assert not result.success
    message = failure_message(result)
    assert "'neutral' is not a class of this task (classes: positive, negative)" in message
    assert not result.get_asset_materialization_events()
