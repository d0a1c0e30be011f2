"""deploy/kubernetes, checked offline: Kubernetes' schemas, KubeRay's fields, and that the
images, commands, ports and configs in them agree with each other and with swell.

Nothing here talks to a cluster; docs/kubernetes.md lists what only a real one can verify.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from swell.cli import build_parser
from swell.config import ServeConfig
from tests.kubernetes.kuberay_schema import SCHEMAS

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"  # GKE's regular channel at the time of writing
MANIFESTS = sorted(DEPLOY_DIR.glob("*.yaml"))
SWITCHES = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
ADMIN_PORT, SERVE_PORT = 8265, 8000
# The flags of `swell start` that the head's command relies on (checked at merge with the Ray
# engine's CLI): foreground, on the pod's Ray cluster, serving and administered on all
# interfaces of the pod.
HEAD_SWELL = [
    "swell",
    "start",
    "--block",
    "--address",
    "auto",
    "--host",
    "0.0.0.0",
    "--port",
    str(SERVE_PORT),
    "--admin-host",
    "0.0.0.0",
    "--admin-port",
    str(ADMIN_PORT),
]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in MANIFESTS for doc in documents(path)]


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec["rayClusterConfig"] if doc["kind"] == "RayService" else spec


def ray_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(n, d) for n, d in all_documents() if d["kind"] in ("RayService", "RayCluster")]


def groups(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, group spec) for the head and every worker group."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [
        (group["groupName"], group) for group in spec["workerGroupSpecs"]
    ]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    """KubeRay treats the first container as Ray's (its ports, probes and environment)."""
    container: dict[str, Any] = group["template"]["spec"]["containers"][0]
    return container


def ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def serve_configs(doc: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> list[Any]:
    if doc["kind"] == "RayService":
        return [yaml.safe_load(doc["spec"]["serveConfigV2"])]
    return [yaml.safe_load(text) for cm in configmaps.values() for text in cm["data"].values()]


ids = [f"{name}:{doc['kind']}" for name, doc in ray_objects()]


def test_there_are_manifests() -> None:
    names = {path.name for path in MANIFESTS}
    assert {"hello-rayservice.yaml", "llm-rayservice.yaml", "hello-raycluster.yaml"} <= names


@pytest.mark.parametrize(("name", "doc"), all_documents(), ids=lambda v: str(v)[:40])
def test_each_object_validates(name: str, doc: dict[str, Any]) -> None:
    if doc["kind"] in SCHEMAS:
        jsonschema.validate(doc, SCHEMAS[doc["kind"]])
        for group_name, group in groups(doc):
            template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{doc['metadata']['name']}-{group_name}"},
                "template": group["template"],
            }
            kubernetes_validate.validate(template, KUBERNETES_VERSION, strict=True)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("name", "doc"), ray_objects(), ids=ids)
def test_ports_switches_and_images_line_up(name: str, doc: dict[str, Any]) -> None:
    head = ray_container(cluster_spec(doc)["headGroupSpec"])
    assert ports(head)["dashboard"] == ADMIN_PORT, "the operator calls the port named dashboard"
    images = set()
    for group_name, group in groups(doc):
        container = ray_container(group)
        assert ports(container)["serve"] == SERVE_PORT, (group_name, "KubeRay's serve probe")
        for switch, value in SWITCHES.items():
            assert env(container).get(switch) == value, (group_name, switch)
        images.add(container["image"])
    [image] = images  # one image for every pod: replicas import what the controller imported
    ray_version = cluster_spec(doc)["rayVersion"]
    assert image.endswith(f"-ray{ray_version}"), (image, ray_version)
    dockerfile = DEPLOY_DIR / ("Dockerfile.gpu" if "/swell-llm:" in image else "Dockerfile")
    assert f"ARG RAY_VERSION={ray_version}\n" in dockerfile.read_text(), dockerfile


@pytest.mark.parametrize(("name", "doc"), ray_objects(), ids=ids)
def test_the_head_runs_ray_then_swell_with_the_assumed_flags(
    name: str, doc: dict[str, Any]
) -> None:
    head_group = cluster_spec(doc)["headGroupSpec"]
    container = ray_container(head_group)
    assert head_group["template"]["metadata"]["annotations"] == {
        "ray.io/overwrite-container-cmd": "true"
    }
    assert container["command"] == ["/bin/bash", "-lc", "--"]
    [script] = container["args"]
    ray_part, swell_part = script.split("&& exec ")
    assert shlex.split(swell_part) == HEAD_SWELL
    # ...and swell's own CLI takes those flags (they name a Ray cluster and block).
    parsed = build_parser().parse_args(HEAD_SWELL[1:])
    assert (parsed.block, parsed.address, parsed.admin_port) == (True, "auto", ADMIN_PORT)
    ray_words = shlex.split(ray_part.split(";", 1)[1])
    assert ray_words[:3] == ["ray", "start", "--head"]
    # KubeRay's probes read rayStartParams: they must describe the Ray actually started.
    flags = dict(word.removeprefix("--").split("=", 1) for word in ray_words[3:])
    assert flags == head_group["rayStartParams"]
    ray_dashboard = int(flags["dashboard-port"])
    assert ray_dashboard != ADMIN_PORT and ports(container)["ray-dashboard"] == ray_dashboard


def test_every_import_path_exists_and_every_config_is_valid() -> None:
    configmaps = {d["metadata"]["name"]: d for _, d in all_documents() if d["kind"] == "ConfigMap"}
    checked = 0
    for _, doc in ray_objects():
        for raw in serve_configs(doc, configmaps):
            config = ServeConfig(**raw)
            assert "http_options" not in raw, "swell start's flags set them; a PUT may not differ"
            for app in config.applications:
                module, _, attribute = app.import_path.partition(":")
                target = getattr(importlib.import_module(module), attribute)
                if callable(target) and not hasattr(target, "bind") and app.args:
                    target(app.args)  # a builder: its args must build (nothing is started)
                checked += 1
    assert checked >= 3


def test_the_llm_service_has_a_gpu_for_every_replica() -> None:
    [doc] = documents(DEPLOY_DIR / "llm-rayservice.yaml")
    [app] = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    [model] = app["args"]["llm_configs"]
    assert model["accelerator_type"] == "L4"
    deployment = model["deployment_config"]
    [workers] = cluster_spec(doc)["workerGroupSpecs"]
    container = ray_container(workers)
    gpus_per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus_per_pod == 1
    assert deployment["num_replicas"] == workers["replicas"] == workers["minReplicas"] == 4
    assert deployment["ray_actor_options"]["num_gpus"] == gpus_per_pod
    node_selector = workers["template"]["spec"]["nodeSelector"]
    assert node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    for _, group in groups(doc):
        token = env(ray_container(group))["HF_TOKEN"]
        assert token == {"secretKeyRef": {"name": "hf-secret", "key": "hf_api_token"}}


def test_the_deploy_job_reaches_its_cluster_with_the_cluster_token() -> None:
    docs = {d["kind"]: d for d in documents(DEPLOY_DIR / "hello-raycluster.yaml")}
    cluster, job, configmap = docs["RayCluster"], docs["Job"], docs["ConfigMap"]
    name = cluster["metadata"]["name"]
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    command = container["command"]
    assert command[:2] == ["swell", "deploy"]
    assert command[command.index("--address") + 1] == f"http://{name}-head-svc:{ADMIN_PORT}"
    # KubeRay keeps the token of an authOptions.mode: token cluster in the Secret named after
    # the cluster, key auth_token; swell reads RAY_AUTH_TOKEN when RAY_AUTH_MODE=token.
    assert env(container)["RAY_AUTH_MODE"] == "token"
    assert env(container)["RAY_AUTH_TOKEN"] == {"secretKeyRef": {"name": name, "key": "auth_token"}}
    assert not any(re.search(r"token", word, re.I) for word in command), "never in argv"
    [volume] = spec["volumes"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    [mount] = container["volumeMounts"]
    assert command[2] == f"{mount['mountPath']}/{next(iter(configmap['data']))}"
    assert job["spec"]["activeDeadlineSeconds"] > 0  # the retries have a deadline
