"""Starting a distributed training: torchrun's processes, on this machine or on a cluster,
reporting back to the Dagster step through Pipes."""

from abc import ABC, abstractmethod
from typing import Any

import dagster as dg


class TrainingLauncher(dg.ConfigurableResource, ABC):
    """Runs `python -m torch.distributed.run <torchrun_args>` on `num_nodes` machines as one
    Pipes session of the calling step, and returns what rank 0 reported (its custom messages)."""

    @abstractmethod
    def max_nodes(self) -> int | None:
        """How many machines this launcher reaches (None: as many as asked)."""

    @abstractmethod
    def launch(
        self,
        context: dg.AssetExecutionContext,
        torchrun_args: list[str],
        num_nodes: int,
        extras: dict[str, Any],
    ) -> list[Any]:
        """Start the ranks, stream their log into the run, wait for the end; raise when any
        rank failed. Returns rank 0's custom messages."""


class TrainingProcessError(RuntimeError):
    """A training process failed; says rank 0's error when rank 0 reported one."""

    ERROR = "training_error"

    @classmethod
    def from_messages(cls, what: str, messages: list[Any]) -> "TrainingProcessError":
        errors = [m[cls.ERROR] for m in messages if isinstance(m, dict) and cls.ERROR in m]
        if errors:
            return cls(f"{what}; rank 0 failed: {errors[0]}")
        return cls(
            f"{what}; another rank failed first: torchrun's summary in the step's log names it"
        )
