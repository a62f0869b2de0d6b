"""Offline checks of the Kubernetes manifests: the KubeRay CRD schemas as the API server applies
them (defaults filled in, unknown fields refused), the operator's own rules, and the security
fields every pod must carry."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "k8s" / "crds"  # KubeRay v1.7.0, vendored unchanged
MAX_RAYJOB_NAME = 47


def pinned_ray_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', text).group(1)


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text())
    version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
    return close_objects(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def close_objects(schema: Any) -> Any:
    """Objects that list their properties accept nothing else (the API server prunes unknown
    fields silently, so a misspelt field would otherwise pass)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            close_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            close_objects(value)
    return schema


def apply_defaults(schema: dict[str, Any], instance: Any) -> Any:
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                apply_defaults(sub, instance[name])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            apply_defaults(schema["items"], item)
    return instance


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = crd_schema(doc["kind"])
    instance = apply_defaults(schema, copy.deepcopy(doc))
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _cluster_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    return [doc["spec"]["rayClusterSpec"]] if "rayClusterSpec" in doc["spec"] else []


def operator_errors(doc: dict[str, Any], ray_version: str) -> list[str]:
    """Rules the KubeRay operator enforces that the schema does not, and the version pin."""
    out = []
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        if len(doc["metadata"]["name"]) > MAX_RAYJOB_NAME:
            out.append(f"RayJob name longer than {MAX_RAYJOB_NAME} characters")
        if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
            out.append("ttlSecondsAfterFinished > 0 needs shutdownAfterJobFinishes: true")
        try:
            env = yaml.safe_load(spec.get("runtimeEnvYAML", "") or "{}")
            if not isinstance(env, dict):
                out.append("runtimeEnvYAML is not a mapping")
        except yaml.YAMLError:
            out.append("runtimeEnvYAML does not parse as YAML")
    for cluster in _cluster_specs(doc):
        if cluster.get("rayVersion") != ray_version:
            out.append(f"rayVersion {cluster.get('rayVersion')!r} is not the pinned {ray_version}")
        for group in cluster.get("workerGroupSpecs", []):
            lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
            if lo > hi:
                out.append(f"worker group {group['groupName']}: minReplicas > maxReplicas")
            if "replicas" in group and not lo <= group["replicas"] <= hi:
                out.append(f"worker group {group['groupName']}: replicas outside min..max")
    for image in images(doc):
        name, _, tag = image.rpartition(":")
        if ("rayproject/ray" in name or name.endswith("gammaface")) and ray_version not in tag:
            out.append(f"image {image} does not carry the pinned Ray version {ray_version}")
    return out


def stop_errors(doc: dict[str, Any]) -> list[str]:
    """Every Ray container stops its node in a preStop hook: `ray start --block`, the command
    KubeRay runs, ignores SIGTERM (tests/deploy/servers.py stops it with SIGINT), so without the
    hook a pod keeps its CPUs and GPUs for its whole termination grace period."""
    out = []
    for cluster in _cluster_specs(doc):
        groups = [("head", cluster["headGroupSpec"])] + [
            (f"worker group {g['groupName']}", g) for g in cluster.get("workerGroupSpecs", [])]
        for where, group in groups:
            ray = group["template"]["spec"]["containers"][0]  # KubeRay runs Ray in the first
            command = ray.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            if "ray stop" not in " ".join(command):
                out.append(f"{where}: container {ray['name']} has no preStop hook running `ray stop`")
    return out


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod a manifest makes."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield kind, spec["template"]["spec"]
    elif kind == "CronJob":
        yield kind, spec["jobTemplate"]["spec"]["template"]["spec"]
    for cluster in _cluster_specs(doc) if kind in ("RayCluster", "RayJob") else []:
        yield "head", cluster["headGroupSpec"]["template"]["spec"]
        for g in cluster.get("workerGroupSpecs", []):
            yield f"worker group {g['groupName']}", g["template"]["spec"]
    if kind == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitter", spec["submitterPodTemplate"]["spec"]


def images(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "image" and isinstance(v, str):
                yield v
            else:
                yield from images(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from images(v)


def security_errors(doc: dict[str, Any]) -> list[str]:
    out = []
    for where, pod in pod_specs(doc):
        psc = pod.get("securityContext", {})
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        for c in containers:
            csc = c.get("securityContext", {})
            name = f"{doc['kind']} {doc['metadata']['name']} {where} container {c['name']}"
            if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                out.append(f"{name}: runAsNonRoot is not true")
            seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                out.append(f"{name}: seccompProfile is not RuntimeDefault")
            if csc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{name}: allowPrivilegeEscalation is not false")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                out.append(f"{name}: capabilities are not all dropped")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    out.append(f"{name}: no cpu and memory {part}")
            for env in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", env["name"]) and "value" in env:
                    out.append(f"{name}: {env['name']} is inline, not from a Secret")
    return out


def load_all(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for p in paths:
        for doc in yaml.safe_load_all(p.read_text()):
            if doc:
                out.append((p, doc))
    return out


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The `replace`/`add`/`remove` operations of RFC 6902 that the overlays use."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, leaf = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(leaf) if isinstance(node, list) else leaf
        if op["op"] in ("replace", "add"):
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"unsupported patch op {op['op']}")
    return doc


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in pod_specs(doc):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            yield f"{doc['kind']} {doc['metadata']['name']} {where} container {c['name']}", c


def _command_lines(c: dict[str, Any]) -> list[str]:
    """Every string a container runs with: command, args, and its probes' and hooks' commands."""
    out = list(c.get("command", [])) + list(c.get("args", []))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        out += c.get(probe, {}).get("exec", {}).get("command", [])
    for hook in c.get("lifecycle", {}).values():
        out += hook.get("exec", {}).get("command", [])
    return [str(s) for s in out]


USERINFO = re.compile(r"://[^/@\s:]+:[^/@\s]+@")  # scheme://user:password@host


def credential_errors(doc: dict[str, Any]) -> list[str]:
    """A credential in a command line is readable by anyone who can list processes or read the
    pod: neither a variable filled from a Secret (Kubernetes' $(VAR) or a shell's $VAR) nor a
    URI with a password may appear there; a ConfigMap holds no password either."""
    out = []
    if doc["kind"] == "ConfigMap":
        for key, value in (doc.get("data") or {}).items():
            if USERINFO.search(str(value)):
                out.append(f"ConfigMap {doc['metadata']['name']}: {key} holds a URI with a password")
    for name, c in containers(doc):
        secret = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        if any("secretRef" in e for e in c.get("envFrom", [])):
            out.append(f"{name}: envFrom a whole Secret (its variables cannot be checked)")
        for line in _command_lines(c):
            for var in secret:
                if re.search(rf"\$[({{]?{var}\b", line):
                    out.append(f"{name}: the Secret's {var} is in its command line")
            if USERINFO.search(line):
                out.append(f"{name}: a URI with a password is in its command line")
    return out


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k path` would send, rendered by kubectl's own kustomize."""
    import subprocess
    done = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def kustomize_files(path: Path) -> set[Path]:
    """The manifest files a kustomization takes in, following its resources and components."""
    doc = yaml.safe_load((path / "kustomization.yaml").read_text())
    out: set[Path] = set()
    for entry in doc.get("resources", []) + doc.get("components", []):
        target = (path / entry).resolve()
        out |= kustomize_files(target) if target.is_dir() else {target}
    return out


def overlay_images(path: Path) -> dict[str, dict[str, str]]:
    """The `images` rewrites an overlay applies (its own and its components'), by image name."""
    doc = yaml.safe_load((path / "kustomization.yaml").read_text())
    out = {i["name"]: i for i in doc.get("images", [])}
    for entry in doc.get("components", []):
        out.update(overlay_images((path / entry).resolve()))
    return out
