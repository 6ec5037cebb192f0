"""torchrun on the step's own machine, as a Dagster Pipes subprocess."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from assets.interfaces.launcher import TrainingLauncher, TrainingProcessError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 30  # torchrun passes SIGINT to its ranks, which stop at their next step


class LocalTorchrunLauncher(TrainingLauncher):
    """torchrun's processes beside the Dagster step, on the same machine (one node)."""

    def max_nodes(self) -> int | None:
        return 1

    def launch(
        self,
        context: dg.AssetExecutionContext,
        torchrun_args: list[str],
        num_nodes: int,
        extras: dict[str, Any],
    ) -> list[Any]:
        if num_nodes != 1:
            raise ValueError(f"num_nodes={num_nodes}: this launcher starts one node")
        # the worker imports this project: from its checkout as much as from an installed wheel
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args]
        context.log.info(f"starting {' '.join(command[1:])}")
        # a Pipes session of our own rather than PipesSubprocessClient: its messages (rank 0's
        # error among them) stay readable when the process fails
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesTempFileContextInjector(),
            message_reader=dg.PipesTempFileMessageReader(),
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                command,
                env={**os.environ, "PYTHONPATH": path, **session.get_bootstrap_env_vars()},
            )
            try:
                code = process.wait()
            except BaseException:  # the run was stopped: stop the ranks too
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        messages = list(session.get_custom_messages())
        if code != 0:
            raise TrainingProcessError.from_messages(f"torchrun exited with code {code}", messages)
        return messages
