import re

import pytest

from assets.model.training.config import FineTuneConfig
from assets.model.training.fit import (
    _devices,
    _limit_train_batches,
    balanced_class_weights,
    resolve_precision,
)
from assets.model.training.placement import PlacementError


def test_precision_auto_is_fp32_without_a_gpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"
    assert resolve_precision("16-mixed", "auto") == "16-mixed"


def test_precision_auto_is_bf16_on_a_gpu_that_supports_it(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "gpu") == "32-true"


def test_balanced_class_weights_make_classes_weigh_the_same():
    weights = balanced_class_weights([0, 0, 0, 1], 2)
    assert weights == pytest.approx([4 / 6, 4 / 2])
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)


def test_fingerprint_ignores_placement_but_not_hyperparameters():
    base = FineTuneConfig()
    assert FineTuneConfig(devices="2", num_workers=4).fingerprint() == base.fingerprint()
    assert FineTuneConfig(learning_rate=1e-4).fingerprint() != base.fingerprint()


def test_max_steps_shorter_than_an_epoch_shortens_the_epoch():
    assert _limit_train_batches(FineTuneConfig(max_steps=7)) == 7
    assert _limit_train_batches(FineTuneConfig()) == 1.0
    assert _limit_train_batches(FineTuneConfig(limit_train_batches=20, max_steps=7)) == 20
    assert _limit_train_batches(FineTuneConfig(limit_train_batches=0.5)) == 0.5


def test_devices_parsing():
    assert _devices("auto") == "auto"
    assert _devices("2") == 2
    assert _devices("0,1") == [0, 1]


def test_torchrun_settings_reach_the_trainer_without_a_sampler_of_its_own():
    import lightning as L

    from assets.model.training.fit import trainer_settings

    config = FineTuneConfig(
        launcher="torchrun", accelerator="cpu", devices="2", strategy="ddp", max_epochs=3
    )
    settings = trainer_settings(config, "32-true")
    assert (settings["devices"], settings["strategy"], settings["num_nodes"]) == (2, "ddp", 1)
    assert settings["use_distributed_sampler"] is False  # the batch sampler shards per rank
    trainer = L.Trainer(**settings, logger=False)
    assert trainer.num_devices == 2
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert trainer.max_epochs == 3


def test_in_process_training_is_one_device_even_where_auto_would_take_every_gpu():
    from assets.model.training.fit import trainer_settings

    settings = trainer_settings(FineTuneConfig(accelerator="cpu"), "32-true")
    assert (settings["devices"], settings["strategy"], settings["num_nodes"]) == (1, "auto", 1)


@pytest.mark.parametrize(
    ("settings", "max_nodes", "says"),
    [
        ({"strategy": "ddp", "devices": "2"}, 1, "Set launcher: torchrun"),
        ({"devices": "4"}, 1, "Set launcher: torchrun"),
        ({"num_nodes": 2}, 1, "Set launcher: torchrun"),
        ({"launcher": "torchrun", "devices": "2", "num_nodes": 2}, 1, "TEXTOPS_EXECUTOR=k8s"),
        ({"launcher": "torchrun", "devices": "2", "strategy": "ddp_spawn"}, 1, "strategy: ddp"),
        ({"launcher": "torchrun", "devices": "2", "strategy": "fsdp"}, 1, "strategy: ddp"),
        ({"launcher": "torchrun"}, 1, "devices: '2'"),
        ({"launcher": "torchrun", "devices": "two"}, 1, "a count such as '2'"),
    ],
)
def test_a_placement_that_cannot_work_is_refused_with_what_to_set(settings, max_nodes, says):
    from assets.model.training.fit import training_placement
    from assets.model.training.placement import PlacementError

    with pytest.raises(PlacementError, match=re.escape(says)):
        training_placement(FineTuneConfig(**{"accelerator": "cpu", **settings}), max_nodes)


def test_torchrun_placement_counts_processes_over_nodes():
    from assets.model.training.fit import training_placement
    from assets.model.training.placement import torchrun_args

    place = training_placement(
        FineTuneConfig(launcher="torchrun", accelerator="cpu", devices="2", num_nodes=3),
        max_nodes=None,
    )
    assert (place.world_size, place.strategy) == (6, "ddp")
    assert torchrun_args(place) == [
        "--nproc-per-node=2",
        "--nnodes=3",
        "--standalone",
        "-m",
        "assets.model.training.worker",
    ]


def test_the_guides_four_gpu_block_starts_four_processes_on_one_node(monkeypatch):
    from assets.model.training.fit import training_placement
    from assets.model.training.placement import torchrun_args
    from tests.unit.test_k8s_manifests import guide_yaml

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    guide = guide_yaml("4.", 'accelerator: gpu, devices: "4" }')
    block = guide["ops"]["fine_tuned_model"]["config"]
    place = training_placement(FineTuneConfig(**block), max_nodes=1)
    assert (place.world_size, place.strategy) == (4, "ddp")
    assert torchrun_args(place)[:3] == ["--nproc-per-node=4", "--nnodes=1", "--standalone"]
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    with pytest.raises(PlacementError, match="asks for 4 GPUs; this machine has 2"):
        training_placement(FineTuneConfig(**block), max_nodes=1)


@pytest.mark.parametrize(
    ("op", "setting", "value"),
    [
        ("fine_tuned_model", "pooling", "max"),
        ("fine_tuned_model", "class_weights", "inverse"),
        ("fine_tuned_model", "launcher", "mpirun"),
        ("serving_variants", "quantization", "int4"),
        ("serving_variants", "quantization_fallback", "fp16"),
    ],
)
def test_a_setting_outside_its_choices_is_refused_when_the_run_is_launched(op, setting, value):
    import dagster as dg

    from orchestration.definitions import defs

    job = defs.resolve_job_def("pipeline")
    with pytest.raises(
        dg.DagsterInvalidConfigError, match=rf"{setting}.*{value}|{value}.*{setting}"
    ):
        dg.validate_run_config(job, {"ops": {op: {"config": {setting: value}}}})
