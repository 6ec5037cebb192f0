from assets.monitoring.serving_log import read_serving_log
from bento.serving_log import ServingLog


def test_records_round_trip_and_a_torn_line_is_skipped(tmp_path):
    log = ServingLog(tmp_path)
    log.append(
        "m:1",
        ["good day", "bad day"],
        ["pos", "neg"],
        [{"pos": 0.9, "neg": 0.1}, {"pos": 0.2, "neg": 0.8}],
        12.5,
    )
    path = next(tmp_path.glob("predictions-*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"ts": 1, "model_tag": "m:1", "te')  # a crash in the middle of a write
    frame, torn = read_serving_log(tmp_path)
    assert torn == 1
    assert frame["text"].to_list() == ["good day", "bad day"]
    assert frame["label"].to_list() == ["pos", "neg"]
    assert frame["text_length"].to_list() == [8, 7]
    log.append("m:1", ["later"], ["pos"], [{"pos": 1.0, "neg": 0.0}], 3.0)
    frame, torn = read_serving_log(tmp_path)
    assert frame.height == 3  # records written after the torn line are readable too


def test_text_can_be_kept_out_of_the_log(tmp_path):
    ServingLog(tmp_path, log_text=False).append("m:1", ["secret"], ["pos"], [{"pos": 1.0}], 1.0)
    frame, _ = read_serving_log(tmp_path)
    assert frame["text"].to_list() == [None] and frame["text_length"].to_list() == [6]
