"""The short form of benchmarks/unattended.py: three simulated days of a deployment left alone
(the daemon and the service following the registry) with every kind of fault and event once.
Nothing a client sends fails while the service is up, no answered prediction is lost from the
log outside the log's own faults, every fault is recovered from by itself, and drift retrains."""

import os

import pytest

from benchmarks.unattended import run


@pytest.mark.slow  # about 10 minutes of a real daemon and service
def test_three_days_left_alone(tmp_path):
    report = run(days=3, day_s=60.0, root=tmp_path / "month")

    assert report["traffic"]["requests"] > 500
    assert report["traffic"]["failed_while_up"] == 0, report["traffic"]
    assert report["records"]["checked"] > 300
    assert report["records"]["lost"] == 0, report["records"]

    faults = {f["fault"]: f for f in report["faults"]}
    assert set(faults) == {
        "log_removed",
        "service_killed",
        "registration_killed",
        "disk_full",
        "training_killed",
        "hanging_source",
    }
    for name, fault in faults.items():
        if name == "disk_full" and os.geteuid() != 0:
            assert fault["note"].startswith("not run")  # a tmpfs needs root
            continue
        assert fault["recover_s"] is not None, fault
    assert faults["hanging_source"]["recover_s"] < 120  # failed at its 10 s deadline

    (episode,) = report["drift_episodes"]
    assert episode["retrained"], episode
    assert report["landed"]["malformed"] == 1
    assert set(report["storage_bytes"]) == {"day_1", "day_3"}
