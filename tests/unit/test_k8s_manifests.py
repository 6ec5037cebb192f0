"""What textops sends to Kubernetes, checked offline: the step jobs of the k8s executor and the
training pods and PyTorchJobs of the torchrun launcher, rendered from docs/deploy.md's own
blocks and validated against the Kubernetes API's models (the kubernetes client's, with its
client-side validation) and the Kubeflow PyTorchJob v1 schema; the launcher against a fake API.
"""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import jsonschema
import kubernetes
import pytest
import yaml
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PIPES_PROTOCOL_VERSION_FIELD,
    decode_env_var,
    encode_env_var,
)

from orchestration.resources.k8s_training import (
    CONTAINER,
    GPU,
    PORT_NAME,
    K8sTorchrunLauncher,
    node_torchrun_args,
)

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
IMAGE = "REGISTRY/textops-pipeline:TAG"
MOUNT = "/opt/dagster/home/textops"
WORKER = ["-m", "assets.model.training.worker"]

# The shape of a Kubeflow PyTorchJob (kubeflow.org/v1) as the training operator v1.9 takes it:
# the CRD's openAPIV3Schema (manifests/base/crds/kubeflow.org_pytorchjobs.yaml) for the fields
# textops sets, with the enums of its Go types and the rules of its admission webhook (a DNS-1035
# name; Master and Worker replicas only; one Master). Each replica's pod template is checked
# against the Kubernetes client's V1PodTemplateSpec on top of this.
PYTORCH_JOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "maxLength": 63,
                    "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$",
                }
            },
        },
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs", "runPolicy"],
            "additionalProperties": False,
            "properties": {
                "nprocPerNode": {"type": "string"},
                "elasticPolicy": {"type": "object"},
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "activeDeadlineSeconds": {"type": "integer"},
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "cleanPodPolicy": {"enum": ["None", "Running", "All"]},
                        "managedBy": {"type": "string"},
                        "schedulingPolicy": {"type": "object"},
                        "suspend": {"type": "boolean"},
                        "ttlSecondsAfterFinished": {"type": "integer"},
                    },
                },
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master"],
                    "propertyNames": {"enum": ["Master", "Worker"]},
                    "properties": {"Master": {"properties": {"replicas": {"const": 1}}}},
                    "additionalProperties": {
                        "type": "object",
                        "required": ["replicas", "template"],
                        "additionalProperties": False,
                        "properties": {
                            "replicas": {"type": "integer", "minimum": 1},
                            "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                            "template": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}
# what the training operator sets on each replica's `pytorch` container (pkg/controller.v1/pytorch)
OPERATOR_ENV = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PYTHONUNBUFFERED"}


def guide_yaml(section: str, containing: str) -> dict:
    """The one YAML block of docs/deploy.md's section `section` ("4.") holding `containing`."""
    text = GUIDE.read_text()
    start = text.index(f"\n## {section} ")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```yaml\n(.*?)```", text[start : end if end > 0 else None], re.S)
    (block,) = [b for b in blocks if containing in b]
    return yaml.safe_load(block)


def fields(value, path: str = "") -> set[str]:
    """Every field path in a manifest (list items by position)."""
    if isinstance(value, dict):
        return {f"{path}.{k}" for k in value} | {
            p for k, v in value.items() for p in fields(v, f"{path}.{k}")
        }
    if isinstance(value, list):
        return {p for i, v in enumerate(value) for p in fields(v, f"{path}[{i}]")}
    return set()


def validated(kind: str, data: dict):
    """`data` read as the Kubernetes client's model `kind`: its client-side validation refuses
    a missing required field; a field the model does not know is dropped on the way in, so the
    way back out lacks it (a quantity written as a number comes back as a string)."""
    api = kubernetes.client.ApiClient()
    model = api.deserialize(SimpleNamespace(data=json.dumps(data)), kind)
    unknown = fields(data) - fields(api.sanitize_for_serialization(model))
    assert not unknown, f"{kind} has no fields {sorted(unknown)}"
    return model


def test_the_validation_refuses_what_the_api_would():
    with pytest.raises(ValueError, match="`name`, must not be `None`"):
        validated("V1PodSpec", {"containers": [{"image": IMAGE}]})
    with pytest.raises(
        AssertionError, match=r"V1PodSpec has no fields \['.containers\[0\].gpus'\]"
    ):
        validated("V1PodSpec", {"containers": [{"name": "a", "image": IMAGE, "gpus": 1}]})
    chief = {"Chief": {"replicas": 1, "template": {}}}  # a TFJob's replica type
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "a"}}
    with pytest.raises(jsonschema.ValidationError, match="'Chief' is not one of"):
        spec = {"runPolicy": {}, "pytorchReplicaSpecs": {"Master": chief["Chief"], **chief}}
        jsonschema.validate({**job, "spec": spec}, PYTORCH_JOB_SCHEMA)


def k8s_definitions(monkeypatch, env: dict[str, str] | None = None):
    """orchestration/definitions.py loaded afresh as a code location with TEXTOPS_EXECUTOR=k8s
    (and `env`) loads it; the test process's own copy is left as it was."""
    monkeypatch.setenv("TEXTOPS_EXECUTOR", "k8s")
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "textops_k8s_definitions", ROOT / "orchestration" / "definitions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_jobs(monkeypatch, job, run_config: dict, steps: list[str]) -> dict[str, dict]:
    """The Kubernetes jobs the k8s executor creates for `steps` of a `job` run with
    `run_config`, under the run launcher of section 3, as its step handler builds them (the
    API call that would create them captured)."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._core.test_utils import create_run_for_test, instance_for_test
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.client import DagsterKubernetesClient

    created: dict[str, dict] = {}

    def create(self, body, namespace, **kwargs):
        created[body.metadata.labels["dagster/op"]] = {"namespace": namespace, "body": body}

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)
    monkeypatch.setattr(DagsterKubernetesClient, "create_namespaced_job_with_retries", create)
    launcher = guide_yaml("3.", "run_launcher:")
    origin = (
        ReconstructableRepository.for_module(
            "orchestration.definitions", "defs", str(ROOT), container_image=IMAGE
        )
        .get_reconstructable_job(job.name)
        .get_python_origin()
    )
    schema = resolve_to_config_type(k8s_job_executor.config_schema.config_type)
    executor_config = process_config(schema, run_config["execution"]["config"])
    assert executor_config.success, executor_config.errors
    with instance_for_test(overrides=launcher) as instance:
        run = create_run_for_test(
            instance, job_name=job.name, run_config=run_config, job_code_origin=origin
        )
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(
                job=InMemoryJob(job),
                executor_def=k8s_job_executor,
                executor_config=executor_config.value,
                instance=instance,
            )
        )
        plan = create_execution_plan(job, run_config=run_config)
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=InMemoryJob(job),
                dagster_run=run,
                instance=instance,
                execution_plan=plan,
                raise_on_error=True,
                retry_mode=RetryMode.DISABLED,
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        )
        for step in steps:
            context = StepHandlerContext(
                instance=instance,
                plan_context=plan_context,
                steps=plan.steps,
                execute_step_args=ExecuteStepArgs(origin, run.run_id, [step]),
                dagster_run=run,
            )
            list(executor._step_handler.launch_step(context))  # noqa: SLF001
    api = kubernetes.client.ApiClient()
    jobs = {}
    for step, made in created.items():
        assert made["namespace"] == run_config["execution"]["config"]["job_namespace"]
        jobs[step] = api.sanitize_for_serialization(made["body"])
    return jobs


def only_container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_the_guides_k8s_executor_gives_the_training_step_and_only_it_a_gpu(monkeypatch):
    definitions = k8s_definitions(monkeypatch)
    job = definitions.defs.resolve_job_def("retrain")
    assert job.executor_def.name == "k8s"
    run_config = guide_yaml("3.", "per_step_k8s_config:")
    jobs = step_jobs(monkeypatch, job, run_config, ["fine_tuned_model", "text_splits"])
    for step, manifest in jobs.items():
        validated("V1Job", manifest)
        container = only_container(manifest)
        pod = manifest["spec"]["template"]["spec"]
        assert container["image"] == IMAGE
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DAGSTER_RUN_STEP_KEY"] == step
        assert {"configMapRef": {"name": "textops-env"}} in container["envFrom"]
        assert {"secretRef": {"name": "textops-secrets"}} in container["envFrom"]
        assert pod["serviceAccountName"] == "dagster" and pod["restartPolicy"] == "Never"
    training = jobs["fine_tuned_model"]
    assert only_container(training)["resources"]["limits"] == {GPU: "1", "memory": "32Gi"}
    pod = training["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    splits = jobs["text_splits"]
    assert GPU not in (only_container(splits).get("resources") or {}).get("limits", {})
    assert "nodeSelector" not in splits["spec"]["template"]["spec"]


def guide_launcher(monkeypatch):
    """The code location of section 4 (its env block) and the launcher it wires."""
    env = {e["name"]: e["value"] for e in guide_yaml("4.", "TEXTOPS_SHARED_CLAIM")["env"]}
    definitions = k8s_definitions(monkeypatch, env)
    launcher = definitions.defs.resources["launcher"]
    assert isinstance(launcher, K8sTorchrunLauncher)
    return definitions, launcher


def guide_torchrun_args(ops: dict, max_nodes: int | None) -> tuple[list[str], int]:
    """The torchrun arguments fine_tuned_model computes from a run config's ops."""
    from assets.model.training.config import FineTuneConfig
    from assets.model.training.fit import training_placement
    from assets.model.training.placement import torchrun_args

    place = training_placement(FineTuneConfig(**ops["fine_tuned_model"]["config"]), max_nodes)
    return torchrun_args(place), place.num_nodes


def shared_extras() -> dict:
    return {
        "config": {"accelerator": "gpu"},
        "split_paths": {"train": f"{MOUNT}/text_splits/v1/train.parquet"},
        "label_names": ["not-hate", "hate"],
        "checkpoint_dir": f"{MOUNT}/checkpoints/fine_tuned_model/v1",
        "export_dir": f"{MOUNT}/textops-model-x/model",
    }


def test_the_guides_code_location_wires_a_launcher_with_the_guides_settings(monkeypatch):
    _, launcher = guide_launcher(monkeypatch)
    assert launcher.shared_claim == "textops-shared" and launcher.gpus_per_node == 4
    assert launcher.shared_mount_path == MOUNT and launcher.image == ""
    assert launcher.pod_spec_config == {
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    }


def test_the_guides_one_node_training_is_one_valid_pod(monkeypatch):
    definitions, launcher = guide_launcher(monkeypatch)
    run_config = guide_yaml("4.", 'devices: "4" }')
    assert dg.validate_run_config(definitions.defs.resolve_job_def("retrain"), run_config)
    args, nodes = guide_torchrun_args(run_config["ops"], launcher.max_nodes())
    assert nodes == 1 and args[:3] == ["--nproc-per-node=4", "--nnodes=1", "--standalone"]
    launcher.check(args, nodes, shared_extras())
    spec = launcher.pod_spec(IMAGE, args, {DAGSTER_PIPES_CONTEXT_ENV_VAR: "context"})
    validated("V1PodSpec", spec)
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "torch.distributed.run"]
    assert container["args"] == args and container["args"][-2:] == WORKER
    assert container["resources"]["limits"] == {"memory": "64Gi", GPU: "4"}
    assert {"name": "textops-shared", "mountPath": MOUNT} in container["volumeMounts"]
    assert {"name": "textops-shared", "persistentVolumeClaim": {"claimName": "textops-shared"}} in (
        spec["volumes"]
    )
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert spec["restartPolicy"] == "Never"


def test_the_guides_two_node_training_is_a_valid_pytorch_job(monkeypatch):
    definitions, launcher = guide_launcher(monkeypatch)
    run_config = guide_yaml("4.", "num_nodes: 2")
    job = definitions.defs.resolve_job_def("retrain")
    assert dg.validate_run_config(job, run_config)
    args, nodes = guide_torchrun_args(run_config["ops"], launcher.max_nodes())
    assert nodes == 2
    launcher.check(args, nodes, shared_extras())
    bootstrap = {
        DAGSTER_PIPES_CONTEXT_ENV_VAR: encode_env_var({"data": {"extras": shared_extras()}}),
        DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_env_var({"stdio": "stderr"}),
    }
    manifest = launcher.pytorch_job(
        name="textops-train-0a1b2c3d-4e5f6a",
        namespace="textops",
        image=IMAGE,
        torchrun_args=args,
        num_nodes=nodes,
        bootstrap_env=bootstrap,
        labels={"dagster/run-id": "0a1b2c3d"},
    )
    jsonschema.validate(manifest, PYTORCH_JOB_SCHEMA)
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 1}
    assert manifest["spec"]["nprocPerNode"] == "4"
    for kind, replica in replicas.items():
        assert replica["restartPolicy"] == "Never"
        template = validated("V1PodTemplateSpec", replica["template"])
        (container,) = template.spec.containers
        assert container.name == CONTAINER and container.image == IMAGE
        assert container.resources.limits[GPU] == "4"
        assert [(p.name, p.container_port) for p in container.ports] == [(PORT_NAME, 23456)]
        # every $(VAR) in torchrun's arguments is one the training operator sets
        assert set(re.findall(r"\$\((\w+)\)", " ".join(container.args))) <= OPERATOR_ENV
        assert container.args == node_torchrun_args(args)
        assert "--standalone" not in container.args and container.args[-2:] == WORKER
        env = {e.name: e.value for e in container.env}
        # every node reads the context; the master's rank 0 writes the messages the step reads
        assert env[DAGSTER_PIPES_CONTEXT_ENV_VAR] == bootstrap[DAGSTER_PIPES_CONTEXT_ENV_VAR]
        messages = decode_env_var(env[DAGSTER_PIPES_MESSAGES_ENV_VAR])
        assert messages == ({"stdio": "stderr"} if kind == "Master" else {"path": "/dev/null"})

    # the step's pod mounts the same claim at the same path, and keeps its working folders there
    steps = step_jobs(monkeypatch, job, run_config, ["fine_tuned_model"])
    step = validated("V1Job", steps["fine_tuned_model"])
    (container,) = step.spec.template.spec.containers
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [
        ("textops-shared", launcher.shared_mount_path)
    ]
    (volume,) = step.spec.template.spec.volumes
    assert volume.persistent_volume_claim.claim_name == launcher.shared_claim
    env = {e.name: e.value for e in container.env}
    assert Path(env["TEXTOPS_CACHE"]).is_relative_to(launcher.shared_mount_path)
    assert not (container.resources.limits or {}).get(GPU)  # the step itself needs none


def test_the_guides_role_lets_the_step_do_what_the_launcher_does():
    role = validated("V1Role", guide_yaml("4.", "kind: Role"))
    allowed = {(r, v) for rule in role.rules for r in rule.resources for v in rule.verbs}
    needed = {("pods", v) for v in ("create", "get", "list", "delete")}
    needed |= {("pods/log", "get")} | {("pytorchjobs", v) for v in ("create", "get", "delete")}
    assert needed <= allowed


def test_the_guides_serving_deployment_is_valid_and_asks_for_the_bentos_gpu():
    deployment = guide_yaml("5.", "kind: Deployment")
    model = validated("V1Deployment", deployment)
    (container,) = model.spec.template.spec.containers
    gpu_args = yaml.safe_load((ROOT / "bento" / "bentofile.gpu.yaml").read_text())["args"]
    assert container.resources.limits[GPU] == str(gpu_args["gpus"])
    follow = guide_yaml("5.", "TEXTOPS_FOLLOW_STORE")
    assert [validated("V1EnvVar", e).name for e in follow] == [
        "TEXTOPS_FOLLOW_STORE",
        "TEXTOPS_ROLLOUT_DIR",
    ]


TORCHRUN_2x4 = ["--nproc-per-node=4", "--nnodes=2", "--standalone", *WORKER]
TORCHRUN_1x4 = ["--nproc-per-node=4", "--nnodes=1", "--standalone", *WORKER]


@pytest.mark.parametrize(
    ("settings", "args", "nodes", "extras", "message"),
    [
        ({"gpus_per_node": 2}, TORCHRUN_1x4, 1, {}, r"4 processes per node .* 2 GPUs"),
        ({"gpus_per_node": 4}, TORCHRUN_2x4, 3, {}, "--nnodes=2 and num_nodes=3 differ"),
        ({"gpus_per_node": 0}, TORCHRUN_1x4, 1, {}, "set TEXTOPS_TRAINING_GPUS"),
        ({"gpus_per_node": 4, "shared_claim": ""}, TORCHRUN_1x4, 1, {}, "TEXTOPS_SHARED_CLAIM"),
        (
            {"gpus_per_node": 4},
            TORCHRUN_1x4,
            1,
            {"export_dir": "/tmp/textops-model-x/model"},
            r"/tmp/textops-model-x/model: not on the shared volume .*TEXTOPS_CACHE",
        ),
    ],
)
def test_a_launch_the_pods_could_not_run_is_refused_before_any_pod(
    fake_cluster, settings, args, nodes, extras, message
):
    launcher = K8sTorchrunLauncher(**{"image": IMAGE, "shared_claim": "textops-shared", **settings})
    with pytest.raises(ValueError, match=message):
        launcher.launch(None, args, nodes, {**shared_extras(), **extras})
    assert fake_cluster.calls == []


def pipes_log(*messages: tuple[str, dict]) -> list[bytes]:
    """A pod's log (timestamped, as `kubectl logs --timestamps` reads it) of Pipes messages."""
    lines = [
        json.dumps({PIPES_PROTOCOL_VERSION_FIELD: "0.1", "method": method, "params": params})
        for method, params in messages
    ]
    return [f"2026-01-01T00:00:0{i}.000000Z {line}\n".encode() for i, line in enumerate(lines)]


OUTCOME = {"training_outcome": {"best_val_macro_f1": 0.9, "history": []}}
RANK_0_LOG = pipes_log(
    ("opened", {}),
    ("log", {"message": "rank 0 of 8", "level": "INFO"}),
    ("report_custom_message", {"payload": OUTCOME}),
    ("closed", {}),
)


class FakeCluster:
    """The Kubernetes API as the launcher and dagster-k8s call it: pods that finish at once with
    `exit_code`, rank 0's log, PyTorchJobs that end in `job_condition`."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.exit_code = 0
        self.job_condition = "Succeeded"

    # CoreV1Api
    def create_namespaced_pod(self, namespace, body):
        self.calls.append(("create pod", namespace, body))

    def list_namespaced_pod(self, namespace, field_selector):
        name = field_selector.removeprefix("metadata.name=")
        state = kubernetes.client.V1ContainerState(
            terminated=kubernetes.client.V1ContainerStateTerminated(exit_code=self.exit_code)
        )
        status = kubernetes.client.V1ContainerStatus(
            name=CONTAINER, image=IMAGE, image_id="", ready=False, restart_count=0, state=state
        )
        pod = kubernetes.client.V1Pod(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            status=kubernetes.client.V1PodStatus(container_statuses=[status]),
        )
        return kubernetes.client.V1PodList(items=[pod])

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.calls.append(("read log", namespace, name))
        return RANK_0_LOG

    def delete_namespaced_pod(self, name, namespace, **kwargs):
        self.calls.append(("delete pod", namespace, name))

    # CustomObjectsApi
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", f"{group}/{version}/{plural}", namespace, body))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        condition = {"type": self.job_condition, "status": "True", "message": "node 1 failed"}
        return {"status": {"conditions": [{"type": "Created", "status": "True"}, condition]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete", f"{group}/{version}/{plural}", namespace, name))


@pytest.fixture
def fake_cluster(monkeypatch):
    from dagster_k8s.client import DagsterKubernetesClient

    cluster = FakeCluster()
    client = DagsterKubernetesClient(
        batch_api=None, core_api=cluster, logger=lambda m: None, sleeper=lambda s: None,
        timer=__import__("time").time,
    )  # fmt: skip
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", lambda **kw: client)
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda *a, **kw: cluster)
    for loader in ("load_incluster_config", "load_kube_config"):
        monkeypatch.setattr(kubernetes.config, loader, lambda *a, **kw: None)
    return cluster


def launched(launcher: K8sTorchrunLauncher, args: list[str], nodes: int) -> list:
    """Rank 0's messages, from a step that launches through `launcher`."""

    @dg.asset
    def fine_tuned_model(context: dg.AssetExecutionContext, launcher: K8sTorchrunLauncher):
        # an asset's plain list would be read as a list of results
        return dg.Output(launcher.launch(context, args, nodes, shared_extras()))

    result = dg.materialize([fine_tuned_model], resources={"launcher": launcher})
    return result.output_for_node("fine_tuned_model")


def pipes_env(container: dict) -> dict:
    env = {e["name"]: e["value"] for e in container["env"]}
    return {k: v for k, v in env.items() if k.startswith("DAGSTER_PIPES_")}


def test_one_node_is_one_pod_as_rendered_and_rank_0_reports_through_its_log(fake_cluster):
    launcher = K8sTorchrunLauncher(
        image=IMAGE, namespace="textops", shared_claim="textops-shared", gpus_per_node=4
    )
    assert launched(launcher, TORCHRUN_1x4, 1) == [OUTCOME]
    (namespace, pod) = fake_cluster.calls[0][1:]
    assert [c[0] for c in fake_cluster.calls] == ["create pod", "read log", "delete pod"]
    assert namespace == "textops"
    spec = kubernetes.client.ApiClient().sanitize_for_serialization(pod.spec)
    bootstrap = pipes_env(spec["containers"][0])
    assert spec == launcher.pod_spec(IMAGE, TORCHRUN_1x4, bootstrap)
    context = decode_env_var(bootstrap[DAGSTER_PIPES_CONTEXT_ENV_VAR])["data"]
    assert context["extras"] == shared_extras()
    assert pod.metadata.labels["app.kubernetes.io/name"] == "textops-training"


def test_several_nodes_are_a_pytorch_job_as_rendered_read_from_the_master(fake_cluster):
    launcher = K8sTorchrunLauncher(
        image=IMAGE, namespace="textops", shared_claim="textops-shared", gpus_per_node=4
    )
    assert launched(launcher, TORCHRUN_2x4, 2) == [OUTCOME]
    (_, kind, namespace, manifest) = fake_cluster.calls[0]
    assert kind == "kubeflow.org/v1/pytorchjobs" and namespace == "textops"
    name = manifest["metadata"]["name"]
    assert fake_cluster.calls[1:] == [
        ("read log", "textops", f"{name}-master-0"),  # the operator's name for node 0's pod
        ("delete", "kubeflow.org/v1/pytorchjobs", "textops", name),
    ]
    master = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    bootstrap = pipes_env(master["containers"][0])
    assert manifest == launcher.pytorch_job(
        name=name,
        namespace="textops",
        image=IMAGE,
        torchrun_args=TORCHRUN_2x4,
        num_nodes=2,
        bootstrap_env=bootstrap,
        labels=manifest["metadata"]["labels"],
    )
    jsonschema.validate(manifest, PYTORCH_JOB_SCHEMA)
    context = decode_env_var(bootstrap[DAGSTER_PIPES_CONTEXT_ENV_VAR])["data"]
    assert context["extras"] == shared_extras()


def test_a_node_that_fails_fails_the_step_and_the_job_is_deleted(fake_cluster):
    launcher = K8sTorchrunLauncher(
        image=IMAGE, namespace="textops", shared_claim="textops-shared", gpus_per_node=4
    )
    fake_cluster.job_condition = "Failed"
    with pytest.raises(RuntimeError, match=r"PyTorchJob textops/textops-train-\S+ failed: node 1"):
        launched(launcher, TORCHRUN_2x4, 2)
    assert fake_cluster.calls[-1][0] == "delete"
