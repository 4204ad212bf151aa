"""deploy/k8s against the Kubernetes schemas (kubernetes-validate, offline; no cluster is run),
and the wiring a schema cannot see: probes, the key's Secret, read-only bundles, GPUs, the HPA."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
VERSION = kubernetes_validate.latest_version()


def docs(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_there_is_a_cpu_and_a_gpu_manifest():
    assert [p.name for p in MANIFESTS] == ["ganforge-gpu.yaml", "ganforge.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_resource_validates_strictly(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment():
    deployment = docs(REPO / "deploy" / "k8s" / "ganforge.yaml")["Deployment"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSION, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_probes_secret_volume_service_and_autoscaler_fit_together(path):
    d = docs(path)
    dep, svc, hpa = d["Deployment"], d["Service"], d["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == 3000  # BentoML's port in the image
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e for e in c["env"]}
    assert env["GAN_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ganforge-api-key"
    assert env["GAN_BUNDLES"]["value"].startswith("/bundles/")
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == "/bundles" and mount["readOnly"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == labels == svc["spec"]["selector"]
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    gpu = c["image"].endswith(":gpu")
    assert ("nvidia.com/gpu" in c["resources"]["limits"]) == gpu
    assert (env.get("GAN_DEVICE", {}).get("value") == "cuda") == gpu
