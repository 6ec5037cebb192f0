import pytest

from assets.model.training.config import FineTuneConfig
from orchestration.sweep import SWEEP, trial_run_config


def test_every_sweep_value_is_a_valid_training_config():
    for rate in SWEEP["parameters"]["learning_rate"]["values"]:
        for size in SWEEP["parameters"]["batch_size"]["values"]:
            config = trial_run_config(
                {"learning_rate": rate, "batch_size": size}, base={"max_epochs": 2}
            )
            values = config["ops"]["fine_tuned_model"]["config"]
            parsed = FineTuneConfig(**values)
            assert (parsed.learning_rate, parsed.batch_size, parsed.max_epochs) == (rate, size, 2)


def test_unknown_sweep_parameter_is_refused():
    with pytest.raises(ValueError, match=r"\['dropout'\] are not in"):
        trial_run_config({"dropout": 0.2})
