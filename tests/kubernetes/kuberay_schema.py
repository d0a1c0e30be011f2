"""A JSON schema for the KubeRay fields swell's manifests use, written from KubeRay's v1 CRDs.

Only the ray.io layer is described here (pod templates are checked against Kubernetes' own
schemas with kubernetes-validate). Field names and limits follow KubeRay's ``ray.io/v1`` types:
RayService names are at most 47 characters and RayCluster names 53 (KubeRay derives longer
object names from them); ``rayStartParams`` values are strings; ``authOptions.mode`` is
``disabled`` or ``token``. On top of the CRD, swell's own requirements: Ray 2.53 or newer, and
token authentication on (swell's admin API always requires a token).
"""

from __future__ import annotations

from typing import Any

# Ray 2.53 or newer: KubeRay's single HTTP health check and the Ray engine's minimum.
RAY_VERSION_PATTERN = r"^2\.(5[3-9]|[6-9][0-9])\.[0-9]+$"

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_POD_TEMPLATE: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
    "additionalProperties": False,
}

_HEAD_GROUP: dict[str, Any] = {
    "type": "object",
    "required": ["rayStartParams", "template"],
    "properties": {
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
        "serviceType": {"type": "string"},
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
    },
    "additionalProperties": False,
}

_WORKER_GROUP: dict[str, Any] = {
    "type": "object",
    "required": ["groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"],
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
        "suspend": {"type": "boolean"},
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
    },
    "additionalProperties": False,
}

RAY_CLUSTER_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["rayVersion", "authOptions", "headGroupSpec", "workerGroupSpecs"],
    "properties": {
        "rayVersion": {"type": "string", "pattern": RAY_VERSION_PATTERN},
        "authOptions": {
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"const": "token"},  # the CRD allows "disabled" too; swell does not
                "secretName": {"type": "string"},
                "enableK8sTokenAuth": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": _WORKER_GROUP},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {"type": "object"},
        "headServiceAnnotations": _STRING_MAP,
        "suspend": {"type": "boolean"},
    },
    "additionalProperties": False,
}


def _object(kind: str, max_name: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": max_name,
                        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                    }
                },
            },
            "spec": spec,
        },
        "additionalProperties": False,
    }


RAY_CLUSTER: dict[str, Any] = _object("RayCluster", 53, RAY_CLUSTER_SPEC)
RAY_SERVICE: dict[str, Any] = _object(
    "RayService",
    47,
    {
        "type": "object",
        "required": ["serveConfigV2", "rayClusterConfig"],
        "properties": {
            "serveConfigV2": {"type": "string", "minLength": 1},
            "rayClusterConfig": RAY_CLUSTER_SPEC,
            "upgradeStrategy": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["NewCluster", "None", "NewClusterWithIncrementalUpgrade"]}
                },
            },
            "serveService": {"type": "object"},
            "excludeHeadPodFromServeSvc": {"type": "boolean"},
            "serviceUnhealthySecondThreshold": {"type": "integer"},
            "deploymentUnhealthySecondThreshold": {"type": "integer"},
            "rayClusterDeletionDelaySeconds": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    },
)

SCHEMAS: dict[str, dict[str, Any]] = {"RayCluster": RAY_CLUSTER, "RayService": RAY_SERVICE}
