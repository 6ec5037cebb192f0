"""Where a training runs: one process in the Dagster step, or torchrun's processes beside it.

Lightning's own DDP launcher starts rank 1 by running the process's command line again; inside a
Dagster step that command is Dagster's, so rank 1 would start a second run. Training on several
devices therefore goes through torchrun (torch.distributed.run), which starts every rank itself,
and Lightning joins the group torchrun made. A placement that cannot work is refused here,
before any work, with what to set instead.
"""

from dataclasses import dataclass

import torch

# Strategies whose processes come from somewhere other than torchrun, or that textops's worker
# does not drive (its checkpoint and export assume replicated weights, as DDP keeps them)
TORCHRUN_STRATEGIES = {"auto", "ddp"}
SINGLE_PROCESS_STRATEGIES = {"auto", "single_device"}


class PlacementError(ValueError):
    """A training placement that cannot work; the message says what to set instead."""


@dataclass(frozen=True)
class Placement:
    """The processes of one training: `nproc_per_node` on each of `num_nodes` machines."""

    launcher: str  # in_process | torchrun
    nproc_per_node: int
    num_nodes: int
    accelerator: str
    strategy: str

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.num_nodes


def _uses_gpu(accelerator: str) -> bool:
    return accelerator in {"gpu", "cuda"} or (accelerator == "auto" and torch.cuda.is_available())


def _device_count(devices: str, accelerator: str) -> int | None:
    """The number of devices a `devices` setting names; None for "auto"."""
    text = devices.strip()
    if text == "auto":
        return None
    if text == "-1":
        return torch.cuda.device_count() if _uses_gpu(accelerator) else None
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise PlacementError(f"devices={devices!r}: give 'auto', a count such as '2', or '0,1'")


def placement(
    launcher: str,
    accelerator: str,
    devices: str,
    strategy: str,
    num_nodes: int,
    max_nodes: int | None,
) -> Placement:
    """Check a training's settings against its launcher; `max_nodes` is how many machines the
    deployment's torchrun launcher reaches (1 for processes on this machine, None for no
    limit)."""
    count = _device_count(devices, accelerator)
    if launcher == "in_process":
        if strategy not in SINGLE_PROCESS_STRATEGIES or (count or 1) > 1 or num_nodes > 1:
            raise PlacementError(
                f"strategy={strategy!r}, devices={devices!r}, num_nodes={num_nodes} needs one "
                "process per device, and Lightning would start them by running the Dagster "
                "step's command again (a second run). Set launcher: torchrun (with strategy: "
                "ddp, or auto) to train on several devices or machines; launcher: in_process "
                "trains on one device"
            )
        return Placement("in_process", 1, 1, accelerator, strategy)
    if launcher != "torchrun":
        raise PlacementError(f"launcher={launcher!r} is not one of in_process, torchrun")
    if strategy not in TORCHRUN_STRATEGIES:
        raise PlacementError(
            f"strategy={strategy!r} with launcher: torchrun: torchrun starts every process and "
            "textops's worker trains them with DDP; set strategy: ddp (or auto)"
        )
    if max_nodes is not None and num_nodes > max_nodes:
        raise PlacementError(
            f"num_nodes={num_nodes}: this deployment's torchrun launcher starts processes on "
            f"{max_nodes} machine(s) only. Run the code location with TEXTOPS_EXECUTOR=k8s, "
            "whose launcher starts one pod per node (docs/deploy.md), or set num_nodes: 1"
        )
    if count is None:
        if not _uses_gpu(accelerator):
            raise PlacementError(
                f"devices={devices!r} with launcher: torchrun on {accelerator!r}: say how many "
                "processes each node starts, e.g. devices: '2'"
            )
        count = torch.cuda.device_count() or 1
    if _uses_gpu(accelerator) and max_nodes == 1 and count > torch.cuda.device_count():
        raise PlacementError(
            f"devices={devices!r} asks for {count} GPUs; this machine has "
            f"{torch.cuda.device_count()}"
        )
    return Placement("torchrun", count, num_nodes, accelerator, "ddp")


def torchrun_args(place: Placement) -> list[str]:
    """torch.distributed.run's arguments for the worker module, standalone; a launcher that
    spans machines swaps `--standalone` for its own rendezvous."""
    return [
        f"--nproc-per-node={place.nproc_per_node}",
        f"--nnodes={place.num_nodes}",
        "--standalone",
        "-m",
        WORKER_MODULE,
    ]


WORKER_MODULE = "assets.model.training.worker"
