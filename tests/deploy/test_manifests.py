import copy
import re

import pytest
import yaml

from tests.deploy.manifests import (REPO, json_patch, load_all, operator_errors, pinned_ray_version,
                                    schema_errors, security_errors)

K8S = REPO / "k8s"
FILES = sorted(p for p in K8S.rglob("*.yaml") if "crds" not in p.parts
               and p.name != "kustomization.yaml" and p.name != "raycluster-cpu.yaml")
DOCS = load_all(FILES)
RAY = [(p, d) for p, d in DOCS if d.get("kind") in ("RayCluster", "RayJob")]
VERSION = pinned_ray_version()


def _id(item):
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"


def _dev_cpu_cluster():
    base = next(d for p, d in RAY if d["kind"] == "RayCluster")
    ops = yaml.safe_load((K8S / "overlays" / "dev-cpu" / "raycluster-cpu.yaml").read_text())
    return json_patch(base, ops)


def test_every_job_the_issue_names_has_a_rayjob():
    names = {d["metadata"]["name"] for _, d in RAY if d["kind"] == "RayJob"}
    assert names == {"gammaface-demo", "gammaface-ffhq", "gammaface-fairface",
                     "gammaface-generate-100k", "gammaface-ablation"}


@pytest.mark.parametrize("item", RAY, ids=_id)
def test_ray_manifests_pass_the_kuberay_schema_and_operator_rules(item):
    _, doc = item
    assert schema_errors(doc) == []
    assert operator_errors(doc, VERSION) == []


def test_the_dev_cpu_overlay_renders_to_a_valid_cpu_cluster():
    doc = _dev_cpu_cluster()
    assert schema_errors(doc) == [] and operator_errors(doc, VERSION) == []
    assert security_errors(doc) == []
    assert [g["groupName"] for g in doc["spec"]["workerGroupSpecs"]] == ["cpu"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(doc)


@pytest.mark.parametrize("item", RAY, ids=_id)
def test_rayjobs_clean_up_and_pass_mlflow_and_workdir(item):
    _, doc = item
    if doc["kind"] != "RayJob":
        return
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://") and env["GAMMAFACE_WORKDIR"].startswith("/mnt/")
    config = spec["entrypoint"].split()[2]
    assert (REPO / config).is_file(), f"{config} is not a config in jobs/"


@pytest.mark.parametrize("item", DOCS, ids=_id)
def test_every_pod_runs_unprivileged_with_requests_and_limits(item):
    _, doc = item
    assert security_errors(doc) == []


def test_gpu_workers_ask_for_gpus_in_requests_and_limits_and_tolerate_the_taint():
    cluster = next(d for _, d in RAY if d["kind"] == "RayCluster")
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    pod = gpu["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert cluster["spec"]["enableInTreeAutoscaling"] is True and gpu["minReplicas"] == 0
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"/mnt/gammaface", "/tmp/ray"} <= mounts and "emptyDir" in volumes["ray-tmp"]


def test_no_secret_is_committed_and_mlflow_serves_artifacts():
    assert not [d for _, d in DOCS if d["kind"] == "Secret"]
    mlflow = next(d for _, d in DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == "gammaface-mlflow")
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve-artifacts" in args
    service = next(d for _, d in DOCS if d["kind"] == "Service" and d["metadata"]["name"] == "gammaface-mlflow")
    assert service["spec"]["type"] == "ClusterIP"


def test_kustomizations_name_only_files_that_exist():
    for k in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(k.read_text())
        for entry in doc.get("resources", []) + [p["path"] for p in doc.get("patches", []) if "path" in p]:
            assert (k.parent / entry).exists(), f"{k}: {entry} does not exist"


def test_the_dockerfile_builds_on_the_pinned_ray_image():
    text = (REPO / "cluster" / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(VERSION)}$", text, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}" in text
    assert "USER ray" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"runs", ".venv", "*.db", "mlruns"} <= set(ignored)


# --- the checks themselves catch what they are for ------------------------------------------

def _job():
    return copy.deepcopy(next(d for _, d in RAY if d["kind"] == "RayJob"))


def test_a_misspelt_field_fails_the_closed_schema():
    doc = _job()
    doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e for e in schema_errors(doc))
    doc = _job()
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert schema_errors(doc)


def test_the_operator_rules_and_the_version_pin_are_enforced():
    doc = _job()
    doc["metadata"]["name"] = "g" * 48
    doc["spec"]["shutdownAfterJobFinishes"] = False
    doc["spec"]["runtimeEnvYAML"] = "env_vars: [unclosed"
    doc["spec"]["rayClusterSpec"]["rayVersion"] = "2.59.0"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = 9
    errors = operator_errors(doc, VERSION)
    assert len(errors) >= 5, errors
    doc = _job()
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = \
        "rayproject/ray:2.59.0-py311-cpu"
    assert any("pinned Ray version" in e for e in operator_errors(doc, VERSION))


def test_the_security_check_catches_a_privileged_container():
    doc = _job()
    c = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    c["securityContext"] = {"allowPrivilegeEscalation": True}
    c["env"].append({"name": "POSTGRES_PASSWORD", "value": "hunter2"})
    del c["resources"]["limits"]
    errors = security_errors(doc)
    assert any("allowPrivilegeEscalation" in e for e in errors)
    assert any("capabilities" in e for e in errors)
    assert any("inline" in e for e in errors) and any("limits" in e for e in errors)
