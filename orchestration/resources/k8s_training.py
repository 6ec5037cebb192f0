"""torchrun on Kubernetes, as a Dagster Pipes session of the training step: one pod for one
node (dagster-k8s's PipesK8sClient), a Kubeflow PyTorchJob for several.

The ranks read the split files and write checkpoints and the exported model at the paths the
step hands them in the Pipes extras, so those paths must lie on one ReadWriteMany volume that
the step's pod and every training pod mount at the same path (docs/deploy.md, section 4). Rank 0
writes the Pipes messages to its stderr; they reach the step through the pod log of the single
pod, or of the PyTorchJob's master pod, which holds node 0.
"""

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import dagster as dg
from pydantic import Field

from assets.interfaces.launcher import TrainingLauncher
from textops_core.settings import env_int

TORCHRUN = ["python", "-m", "torch.distributed.run"]
GPU = "nvidia.com/gpu"
SHARED_VOLUME = "textops-shared"
PYTORCH_JOB = {"group": "kubeflow.org", "version": "v1", "plural": "pytorchjobs"}
# The training operator sets MASTER_ADDR/MASTER_PORT/RANK on the container of this name only, and
# takes the master's port from its port of this name.
CONTAINER = "pytorch"
PORT_NAME = "pytorchjob-port"
# What the step's pod mounts the shared volume at in docs/deploy.md: the pipeline image's
# TEXTOPS_HOME, so that the local store, its checkpoints and the exported model are on it
DEFAULT_SHARED_MOUNT = "/opt/dagster/home/textops"


def node_torchrun_args(torchrun_args: Sequence[str]) -> list[str]:
    """torchrun's arguments for one node of a PyTorchJob: a static rendezvous at the master pod,
    with the node's rank and the master's address and port from the variables the training
    operator sets on every replica (the kubelet expands `$(VAR)` in a container's args)."""
    args = [a for a in torchrun_args if a != "--standalone" and not a.startswith("--rdzv")]
    module = args.index("-m")
    rendezvous = [
        "--node-rank=$(RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
    ]
    return [*args[:module], *rendezvous, *args[module:]]


def training_pod_spec(
    *,
    image: str,
    args: Sequence[str],
    gpus: int,
    shared_claim: str,
    shared_mount_path: str,
    env: Mapping[str, str] | None = None,
    container_config: Mapping[str, Any] | None = None,
    pod_spec_config: Mapping[str, Any] | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """The pod spec of one training node, in the Kubernetes API's form: torchrun in `image` with
    `args`, `gpus` GPUs, the shared claim at `shared_mount_path`, `env` added to the container's.
    `container_config` and `pod_spec_config` are raw container and pod spec fields (snake_case or
    camelCase keys, as in dagster-k8s's per_step_k8s_config) under what this sets."""
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    container = dict(k8s_snake_case_dict(kubernetes.client.V1Container, container_config or {}))
    resources = dict(container.get("resources") or {})
    if gpus:
        resources["limits"] = {**(resources.get("limits") or {}), GPU: str(gpus)}
    container.update(
        name=CONTAINER,
        image=image,
        command=TORCHRUN,
        args=list(args),
        env=[
            *(container.get("env") or []),
            *({"name": k, "value": v} for k, v in (env or {}).items()),
        ],
        volume_mounts=[
            *(container.get("volume_mounts") or []),
            {"name": SHARED_VOLUME, "mount_path": shared_mount_path},
        ],
        resources=resources,
    )
    if port is not None:
        container["ports"] = [
            *(container.get("ports") or []),
            {"name": PORT_NAME, "container_port": port},
        ]
    spec = dict(k8s_snake_case_dict(kubernetes.client.V1PodSpec, pod_spec_config or {}))
    spec.update(
        containers=[container, *(spec.get("containers") or [])],
        volumes=[
            *(spec.get("volumes") or []),
            {"name": SHARED_VOLUME, "persistent_volume_claim": {"claim_name": shared_claim}},
        ],
        # one attempt: a failed training fails the step, and Dagster's retry policy decides
        restart_policy="Never",
    )
    model = k8s_model_from_dict(kubernetes.client.V1PodSpec, spec)
    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def pytorch_job_manifest(
    *,
    name: str,
    namespace: str,
    num_nodes: int,
    nproc_per_node: int,
    master_spec: Mapping[str, Any],
    worker_spec: Mapping[str, Any],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """A Kubeflow PyTorchJob (kubeflow.org/v1) of `num_nodes` pods: the Master (node 0, whose
    pod log carries rank 0's Pipes messages) and num_nodes - 1 Workers, none restarted."""

    def replica(count: int, spec: Mapping[str, Any]) -> dict[str, Any]:
        template = {"metadata": {"labels": dict(labels)}, "spec": dict(spec)}
        return {"replicas": count, "restartPolicy": "Never", "template": template}

    replicas = {"Master": replica(1, master_spec)}
    if num_nodes > 1:
        replicas["Worker"] = replica(num_nodes - 1, worker_spec)
    return {
        "apiVersion": f"{PYTORCH_JOB['group']}/{PYTORCH_JOB['version']}",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "nprocPerNode": str(nproc_per_node),
            # a node that fails fails the job, and the operator then stops the nodes still
            # running instead of leaving them waiting for the lost one
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "Running"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def _flag(args: Sequence[str], name: str) -> str | None:
    prefix = f"{name}="
    return next((a[len(prefix) :] for a in args if a.startswith(prefix)), None)


def _shared_paths(extras: Mapping[str, Any]) -> list[str]:
    """The paths in the step's extras that the training pods read or write."""
    paths = [*dict(extras.get("split_paths") or {}).values()]
    paths += [extras[key] for key in ("checkpoint_dir", "export_dir") if extras.get(key)]
    return [str(p) for p in paths]


class K8sTorchrunLauncher(TrainingLauncher):
    """torchrun in training pods of its own, beside the step's pod: one pod for one node, a
    Kubeflow PyTorchJob (the training operator must be installed) for several."""

    image: str = Field(
        "", description="The training pods' image; empty: the run's own (the code location's)"
    )
    namespace: str = Field(
        "", description="Namespace of the training pods; empty: the step's own, else default"
    )
    shared_claim: str = Field(
        "",
        description="ReadWriteMany PersistentVolumeClaim that the step's pod mounts at "
        "shared_mount_path too: the split files, checkpoints and exported model pass through it",
    )
    shared_mount_path: str = Field(
        DEFAULT_SHARED_MOUNT, description="Where the step's pod and the training pods mount it"
    )
    gpus_per_node: int = Field(
        0, ge=0, description="GPUs of each training pod (nvidia.com/gpu); 0 trains on CPUs"
    )
    container_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw container fields of the training pods (resources, env, env_from, "
        "volume_mounts, ...), as in dagster-k8s's per_step_k8s_config",
    )
    pod_spec_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw pod spec fields of the training pods (node_selector, tolerations, "
        "service_account_name, volumes, ...), as in dagster-k8s's per_step_k8s_config",
    )
    master_port: int = Field(23456, description="The PyTorchJob master's rendezvous port")
    poll_interval_s: float = Field(10.0, gt=0, description="Seconds between API polls")
    timeout_s: float = Field(
        86400.0, gt=0, description="Longest wait for the training pods to start and end"
    )

    @classmethod
    def from_env(cls) -> "K8sTorchrunLauncher":
        """The launcher a code location with TEXTOPS_EXECUTOR=k8s uses (docs/deploy.md)."""
        raw = os.environ.get("TEXTOPS_TRAINING_K8S_CONFIG", "").strip() or "{}"
        try:
            extra = json.loads(raw)
            unknown = set(extra) - {"container_config", "pod_spec_config"}
        except (ValueError, TypeError) as error:
            raise ValueError(f"TEXTOPS_TRAINING_K8S_CONFIG is not a JSON object: {error}") from None
        if unknown:
            raise ValueError(
                f"TEXTOPS_TRAINING_K8S_CONFIG: {sorted(unknown)} not among container_config, "
                "pod_spec_config"
            )
        return cls(
            image=os.environ.get("TEXTOPS_TRAINING_IMAGE", ""),
            namespace=os.environ.get("TEXTOPS_TRAINING_NAMESPACE", ""),
            shared_claim=os.environ.get("TEXTOPS_SHARED_CLAIM", ""),
            shared_mount_path=os.environ.get("TEXTOPS_SHARED_MOUNT", "") or DEFAULT_SHARED_MOUNT,
            gpus_per_node=env_int("TEXTOPS_TRAINING_GPUS", 0, minimum=0),
            **extra,
        )

    def max_nodes(self) -> int | None:
        return None

    def pod_spec(
        self, image: str, args: Sequence[str], env: Mapping[str, str], port: int | None = None
    ) -> dict[str, Any]:
        """One training node's pod spec with this launcher's settings."""
        return training_pod_spec(
            image=image,
            args=args,
            gpus=self.gpus_per_node,
            shared_claim=self.shared_claim,
            shared_mount_path=self.shared_mount_path,
            env=env,
            container_config=self.container_config,
            pod_spec_config=self.pod_spec_config,
            port=port,
        )

    def pytorch_job(
        self,
        *,
        name: str,
        namespace: str,
        image: str,
        torchrun_args: Sequence[str],
        num_nodes: int,
        bootstrap_env: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> dict[str, Any]:
        """The PyTorchJob of a training on `num_nodes` nodes. Every node reads the Pipes context
        (its extras); only the master's messages are read, so the workers write theirs to
        /dev/null, as dagster-k8s does for a pod's other containers."""
        from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, encode_env_var

        args = node_torchrun_args(torchrun_args)
        worker_env = {
            **bootstrap_env,
            DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_env_var({"path": "/dev/null"}),
        }
        return pytorch_job_manifest(
            name=name,
            namespace=namespace,
            num_nodes=num_nodes,
            nproc_per_node=int(_flag(torchrun_args, "--nproc-per-node") or 1),
            master_spec=self.pod_spec(image, args, bootstrap_env, self.master_port),
            worker_spec=self.pod_spec(image, args, worker_env, self.master_port),
            labels=labels,
        )

    def check(self, torchrun_args: Sequence[str], num_nodes: int, extras: Mapping[str, Any]):
        """Refuse, before any pod starts, a launch whose pods could not run the training."""
        nnodes = int(_flag(torchrun_args, "--nnodes") or 1)
        if nnodes != num_nodes:
            raise ValueError(f"torchrun's --nnodes={nnodes} and num_nodes={num_nodes} differ")
        nproc = int(_flag(torchrun_args, "--nproc-per-node") or 1)
        accelerator = str(dict(extras.get("config") or {}).get("accelerator", "auto"))
        if self.gpus_per_node and nproc != self.gpus_per_node:
            raise ValueError(
                f"fine_tuned_model starts {nproc} processes per node (devices), and each training "
                f"pod gets {self.gpus_per_node} GPUs (gpus_per_node, TEXTOPS_TRAINING_GPUS): one "
                f"process per GPU; set devices: '{self.gpus_per_node}', or the GPUs to {nproc}"
            )
        if not self.gpus_per_node and accelerator in {"gpu", "cuda"}:
            raise ValueError(
                f"accelerator: {accelerator}, and the training pods get no GPU (gpus_per_node: 0): "
                "set TEXTOPS_TRAINING_GPUS to the GPUs of each node, or accelerator: cpu"
            )
        if not self.shared_claim:
            raise ValueError(
                "no shared volume (shared_claim, TEXTOPS_SHARED_CLAIM): the training pods read "
                "the split files and write the model on a ReadWriteMany claim that the step's "
                f"pod mounts at {self.shared_mount_path} too (docs/deploy.md)"
            )
        mount = PurePosixPath(self.shared_mount_path)
        outside = [p for p in _shared_paths(extras) if not PurePosixPath(p).is_relative_to(mount)]
        if outside:
            raise ValueError(
                f"{', '.join(outside)}: not on the shared volume (claim {self.shared_claim!r} at "
                f"{mount}), so the training pods would not see them. In the step's pod put "
                "TEXTOPS_HOME and TEXTOPS_CACHE (a GCS store's copies and working folders) "
                "under it (docs/deploy.md)"
            )

    def launch(
        self,
        context: dg.AssetExecutionContext,
        torchrun_args: list[str],
        num_nodes: int,
        extras: dict[str, Any],
    ) -> list[Any]:
        self.check(torchrun_args, num_nodes, extras)
        image = self.image or _run_image(context)
        labels = {
            "app.kubernetes.io/name": "textops-training",
            "dagster/run-id": context.run_id,
            "dagster/op": context.op.name,
        }
        if num_nodes == 1:
            return self._one_pod(context, image, torchrun_args, extras, labels)
        return self._pytorch_job(context, image, torchrun_args, num_nodes, extras, labels)

    def _one_pod(self, context, image, torchrun_args, extras, labels) -> list[Any]:
        from dagster_k8s import PipesK8sClient

        client = PipesK8sClient(poll_interval=self.poll_interval_s)
        context.log.info(f"starting a training pod: torchrun {' '.join(torchrun_args)}")
        invocation = client.run(
            context=context,
            extras=extras,
            namespace=self.namespace or None,
            base_pod_meta={"labels": labels},
            base_pod_spec=self.pod_spec(image, torchrun_args, {}),
            pod_wait_timeout=self.timeout_s,
        )
        return list(invocation.get_custom_messages())

    def _pytorch_job(self, context, image, torchrun_args, num_nodes, extras, labels) -> list[Any]:
        import kubernetes
        from dagster_k8s import PipesK8sPodLogsMessageReader
        from dagster_k8s.client import DagsterKubernetesClient, WaitForPodState
        from dagster_k8s.utils import detect_current_namespace

        _load_kube_config()
        client = DagsterKubernetesClient.production_client()
        custom = kubernetes.client.CustomObjectsApi()
        namespace = self.namespace or detect_current_namespace(None) or "default"
        name = f"textops-train-{context.run_id[:8]}-{secrets.token_hex(3)}"
        master = f"{name}-master-0"  # the training operator's name for node 0's pod
        reader = PipesK8sPodLogsMessageReader()
        wait = {"wait_time_between_attempts": self.poll_interval_s, "wait_timeout": self.timeout_s}
        with dg.open_pipes_session(
            context=context,
            extras=extras,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=reader,
        ) as session:
            manifest = self.pytorch_job(
                name=name,
                namespace=namespace,
                image=image,
                torchrun_args=torchrun_args,
                num_nodes=num_nodes,
                bootstrap_env=session.get_bootstrap_env_vars(),
                labels=labels,
            )
            context.log.info(f"creating PyTorchJob {namespace}/{name} on {num_nodes} nodes")
            custom.create_namespaced_custom_object(
                **PYTORCH_JOB, namespace=namespace, body=manifest
            )
            try:
                client.wait_for_pod(master, namespace, WaitForPodState.Ready, **wait)
                reader.consume_pod_logs(
                    context=context, core_api=client.core_api, pod_name=master, namespace=namespace
                )
                client.wait_for_pod(master, namespace, WaitForPodState.Terminated, **wait)
                self._wait_for_job(custom, name, namespace)
            finally:
                custom.delete_namespaced_custom_object(
                    **PYTORCH_JOB, namespace=namespace, name=name, propagation_policy="Background"
                )
        return list(dg.PipesClientCompletedInvocation(session).get_custom_messages())

    def _wait_for_job(self, custom, name: str, namespace: str) -> None:
        """Until the PyTorchJob's Succeeded condition; its Failed condition (a worker node that
        failed while the master's processes ended well) raises."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            job = custom.get_namespaced_custom_object(**PYTORCH_JOB, namespace=namespace, name=name)
            conditions = {
                c.get("type"): c
                for c in (job.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            }
            if "Succeeded" in conditions:
                return
            if "Failed" in conditions:
                raise RuntimeError(
                    f"PyTorchJob {namespace}/{name} failed: {conditions['Failed'].get('message')}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"PyTorchJob {namespace}/{name} did not end in {self.timeout_s} s"
                )
            time.sleep(self.poll_interval_s)


def _run_image(context: dg.AssetExecutionContext) -> str:
    origin = context.dagster_run.job_code_origin
    image = origin.repository_origin.container_image if origin else None
    if not image:
        raise ValueError(
            "no image for the training pods: set TEXTOPS_TRAINING_IMAGE, or run the code "
            "location from an image (its runs then carry it)"
        )
    return image


def _load_kube_config() -> None:
    """In a pod, its service account; elsewhere the kubeconfig (as PipesK8sClient does)."""
    import kubernetes

    if os.getenv("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()
    else:
        kubernetes.config.load_kube_config()
