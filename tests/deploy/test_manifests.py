import copy
import re
import shutil

import pytest
import yaml

from tests.deploy.manifests import (REPO, containers, credential_errors, images, json_patch,
                                    kustomize_build, kustomize_files, load_all, operator_errors,
                                    overlay_images, pinned_ray_version, schema_errors,
                                    security_errors, stop_errors)

K8S = REPO / "k8s"
FILES = sorted(p for p in K8S.rglob("*.yaml") if "crds" not in p.parts
               and p.name != "kustomization.yaml" and p.name != "raycluster-cpu.yaml")
DOCS = load_all(FILES)
RAY = [(p, d) for p, d in DOCS if d.get("kind") in ("RayCluster", "RayJob")]
VERSION = pinned_ray_version()
# what a user applies: each overlay, and each overlay's RayJobs
OVERLAYS = sorted(k.parent for k in (K8S / "overlays").rglob("kustomization.yaml")
                  if yaml.safe_load(k.read_text())["kind"] == "Kustomization")
JOB_FILES = sorted(p for p in (K8S / "jobs").rglob("*.yaml") if p.name != "kustomization.yaml")
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl (its kustomize renders the overlays) is not installed")


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


@pytest.mark.parametrize("item", RAY, ids=_id)
def test_every_ray_container_stops_its_node_when_its_pod_ends(item):
    _, doc = item
    assert stop_errors(doc) == []
    bare = copy.deepcopy(doc)  # and the rule bites
    spec = bare["spec"] if bare["kind"] == "RayCluster" else bare["spec"]["rayClusterSpec"]
    del spec["headGroupSpec"]["template"]["spec"]["containers"][0]["lifecycle"]
    assert stop_errors(bare) == ["head: container ray-head has no preStop hook running `ray stop`"]


def test_the_dev_cpu_overlay_renders_to_a_valid_cpu_cluster():
    doc = _dev_cpu_cluster()
    assert schema_errors(doc) == [] and operator_errors(doc, VERSION) == []
    assert security_errors(doc) == [] and stop_errors(doc) == []
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


# --- the overlays as kustomize renders them ---------------------------------------------------

def _oid(path):
    return str(path.relative_to(K8S / "overlays"))


def test_every_rayjob_is_in_an_overlays_jobs_and_every_overlay_has_jobs():
    """A RayJob outside every kustomization would never get an overlay's images."""
    overlays = [o for o in OVERLAYS if o.name != "jobs"]
    assert {o.name for o in overlays} == {"dev-cpu", "gpu"}
    reached = set()
    for o in overlays:
        assert (o / "jobs" / "kustomization.yaml").is_file(), f"{o} has no jobs/"
        reached |= kustomize_files(o / "jobs")
    assert set(JOB_FILES) <= reached, set(JOB_FILES) - reached
    # the GPU cluster runs every job; the laptop cluster only those without GPUs
    assert set(JOB_FILES) <= kustomize_files(K8S / "overlays" / "gpu" / "jobs")
    for p in kustomize_files(K8S / "overlays" / "dev-cpu" / "jobs"):
        assert "nvidia.com/gpu" not in p.read_text(), f"{p} asks for GPUs on the CPU overlay"


def test_project_images_are_named_so_that_the_overlays_rewrite_them():
    for path, doc in DOCS:
        for image in images(doc):
            if "gammaface" in image:
                assert re.fullmatch(rf"gammaface:ray{re.escape(VERSION)}-(cpu|gpu)", image), \
                    f"{path}: {image} is not gammaface:ray{VERSION}-cpu|gpu, which the overlays rewrite"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS, ids=_oid)
def test_each_overlay_renders_with_its_images_and_passes_every_check(overlay):
    docs = kustomize_build(overlay)
    rewrite = overlay_images(overlay)["gammaface"]
    registry = rewrite["newName"]
    seen = set()
    for doc in docs:
        for image in images(doc):
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{image} is not pinned to a tag"
            if image.split("/")[-1].startswith("gammaface"):
                assert name == registry, f"{doc['kind']} {doc['metadata']['name']}: {image} is not from {registry}"
                assert tag.startswith(f"ray{VERSION}-") and tag == rewrite.get("newTag", tag)
                seen.add(image)
        assert security_errors(doc) == []
        assert credential_errors(doc) == []
        if doc["kind"] in ("RayCluster", "RayJob"):
            assert schema_errors(doc) == [] and operator_errors(doc, VERSION) == []
            assert stop_errors(doc) == []
        assert doc["metadata"].get("namespace") == "gammaface" or doc["kind"] == "Namespace"
    assert seen, f"{overlay} renders no gammaface image"
    kinds = {d["kind"] for d in docs}
    if overlay.name == "jobs":
        assert kinds == {"RayJob"}
    else:
        assert {"RayCluster", "Deployment", "NetworkPolicy", "ConfigMap"} <= kinds


@needs_kubectl
def test_the_object_store_is_an_option_the_laptop_overlay_takes():
    gpu = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build(K8S / "overlays" / "gpu")}
    cpu = kustomize_build(K8S / "overlays" / "dev-cpu")
    assert not any("object-store" in name for _, name in gpu)
    assert ("StatefulSet", "gammaface-object-store") in {(d["kind"], d["metadata"]["name"]) for d in cpu}
    storage = next(d for d in cpu if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gammaface-storage")
    assert storage["data"]["MLFLOW_S3_ENDPOINT_URL"] == "http://gammaface-object-store:7070"
    assert storage["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")


# --- credentials, authentication, the dashboard ------------------------------------------------

@pytest.mark.parametrize("item", DOCS, ids=_id)
def test_no_credential_is_in_any_command_line(item):
    _, doc = item
    assert credential_errors(doc) == []


def test_mlflow_reads_its_store_from_settings_and_its_password_through_libpq():
    mlflow = next(d for _, d in DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == "gammaface-mlflow")
    c = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in c["args"] if "store-uri" in a or "artifacts-destination" in a]
    assert {"configMapRef": {"name": "gammaface-storage"}} in c["envFrom"]
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "gammaface-mlflow-db"
    settings = dict(line.split("=", 1) for line in (K8S / "base" / "storage.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert settings["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://gammaface-postgres:")
    assert "@" not in settings["MLFLOW_BACKEND_STORE_URI"]


def test_every_ray_cluster_requires_a_token_and_exposes_its_dashboard_only_as_documented():
    for path, doc in RAY:
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec.get("authOptions", {}).get("mode") == "token", f"{path}: Ray auth is not on"
        host = spec["headGroupSpec"]["rayStartParams"].get("dashboard-host", "127.0.0.1")
        if doc["kind"] == "RayCluster":
            # reached through `kubectl port-forward`, which connects to the pod's loopback
            assert host == "127.0.0.1", f"{path}: the dashboard listens on {host}"
        else:
            # the submitter pod reaches it through the head's Service: the policy limits who may
            assert host in ("0.0.0.0", "127.0.0.1")
    policy = next(d for _, d in DOCS if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    outside = [r for r in policy["spec"]["ingress"] if any("namespaceSelector" in f for f in r["from"])]
    assert outside and all(r.get("ports") == [{"port": 8265}] for r in outside)
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in base["resources"]


def test_the_credential_check_catches_a_password_in_argv():
    old = {"kind": "Deployment", "metadata": {"name": "m"}, "spec": {"template": {"spec": {"containers": [{
        "name": "mlflow", "command": ["mlflow", "server"],
        "args": ["--backend-store-uri=postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@db:5432/mlflow"],
        "env": [{"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}}}}
    errors = credential_errors(old)
    assert any("POSTGRES_PASSWORD" in e for e in errors) and any("URI with a password" in e for e in errors)
    shell = copy.deepcopy(old)
    c = shell["spec"]["template"]["spec"]["containers"][0]
    c["args"] = ['mc alias set store http://s3:9000 "$AWS_KEY" "${POSTGRES_PASSWORD}"']
    assert any("POSTGRES_PASSWORD" in e for e in credential_errors(shell))
    c["args"] = ["--port=5000"]
    c["envFrom"] = [{"secretRef": {"name": "everything"}}]
    assert any("envFrom" in e for e in credential_errors(shell))
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"URI": "postgresql://u:pw@db/mlflow"}}
    assert credential_errors(cm)
    assert not [n for n, _ in containers(old) if "initContainers" in n]
