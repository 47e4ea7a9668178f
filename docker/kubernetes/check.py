"""Check genserve's Kubernetes manifests and Dockerfile without a cluster.

Run it with the tools environment that ``make tools`` builds (kubernetes-validate and checkov, pinned)::

    .venv-tools/bin/python docker/kubernetes/check.py

Every step fails the run:

1. ``kubectl kustomize`` renders each kustomization (base, overlays, monitoring, kserve).
2. kubernetes-validate checks every rendered object strictly against the schemas of Kubernetes
   ``KUBERNETES_VERSION``. Custom resources have no schema there: the pod inside the KServe
   InferenceService is checked as a Pod, the ServiceMonitor against the Service it scrapes.
3. Cross-references that no schema sees (the Deployment's in any kustomization given): Service
   selectors and target ports against the pods, probe paths, the grace period against Triton's exit
   timeout, the HPA metric against the adapter rule, the pods' UID against the Dockerfile's ``USER``,
   the GPU overlay's ``nvidia.com/gpu``.
4. checkov on the rendered manifests and ``docker/Dockerfile``: a finding not listed in
   ``docker/checkov-allowlist.yaml`` fails, and so does a listed entry that no longer matches a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ALLOWLIST = ROOT / "docker" / "checkov-allowlist.yaml"
# The oldest Kubernetes release the manifests promise to work on; kubernetes-validate bundles its schemas.
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/repository-volume", "monitoring", "kserve")
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"
PROBE_PATHS = {"startupProbe": HEALTH_READY, "readinessProbe": HEALTH_READY, "livenessProbe": HEALTH_LIVE}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    """One failed checkov check, named as checkov names it."""

    check: str
    resource: str
    file: str
    title: str


def render(kustomization: Path) -> list[Manifest]:
    """Objects that ``kubectl kustomize`` renders from one kustomization directory."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("check: kubectl is not on PATH (it renders the kustomizations; `kubectl kustomize`)")
    done = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"check: kubectl kustomize {kustomization} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def name_of(obj: Manifest) -> str:
    """``Kind/name`` of a rendered object, for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def validate_schemas(objects: Iterable[Manifest], version: str) -> Iterator[str]:
    """Strict schema errors of every object; custom resources through the parts Kubernetes defines."""
    for obj in objects:
        if obj["kind"] == "InferenceService":
            obj = predictor_as_pod(obj)
        elif obj["kind"] == "ServiceMonitor":
            continue  # checked against its Service in cross_references
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            yield f"{name_of(obj)}: {path}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError as error:
            yield f"{name_of(obj)}: {error.message}"


def predictor_as_pod(service: Manifest) -> Manifest:
    """The InferenceService's predictor as the v1 Pod KServe makes of it (containers, volumes, security)."""
    predictor = dict(service["spec"]["predictor"])
    # Fields of KServe's own, not of a PodSpec.
    for key in (
        "minReplicas",
        "maxReplicas",
        "scaleMetric",
        "scaleTarget",
        "timeout",
        "containerConcurrency",
    ):
        predictor.pop(key, None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": dict(service["metadata"]), "spec": predictor}


def of_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    """Rendered objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether an equality selector selects objects with these labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def flag_value(args: list[str], flag: str) -> str | None:
    """Value of ``--flag=value`` in a container's args."""
    for arg in args:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def dockerfile_uid() -> int:
    """The numeric UID of the Dockerfile's last ``USER``."""
    users = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    if not users:
        raise SystemExit(f"check: {DOCKERFILE} has no numeric USER")
    return int(users[-1])


def check_deployment(deployment: Manifest, objects: list[Manifest]) -> Iterator[str]:
    """Services, probes, termination and security of the serving Deployment against each other."""
    where = name_of(deployment)
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    pod = template["spec"]
    (triton,) = [c for c in pod["containers"] if c["name"] == "triton"]
    port_names = {port["name"] for port in triton["ports"]}
    for service in of_kind(objects, "Service"):
        if not labels_match(service["spec"]["selector"], pod_labels):
            yield f"{name_of(service)}: selector {service['spec']['selector']} selects no pod of {where}"
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in port_names:
                yield f"{name_of(service)}: targetPort {port['targetPort']} is not a port of {where}"
    for policy in of_kind(objects, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port["port"] not in port_names:
                    yield f"{name_of(policy)}: port {port['port']} is not a port of {where}"
    for budget in of_kind(objects, "PodDisruptionBudget"):
        if not labels_match(budget["spec"]["selector"]["matchLabels"], pod_labels):
            yield f"{name_of(budget)}: selects no pod of {where}"

    probes = {kind: triton.get(kind, {}).get("httpGet", {}).get("path") for kind in PROBE_PATHS}
    for kind, path in probes.items():
        if path != PROBE_PATHS[kind]:
            yield f"{where}: {kind} probes {path!r}, expected Triton's {PROBE_PATHS[kind]}"

    exit_timeout = flag_value(triton["args"], "--exit-timeout-secs")
    if exit_timeout is None:
        yield f"{where}: no --exit-timeout-secs in the args: the grace period cannot be matched to it"
    else:
        pre_stop = triton.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_s = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        grace = pod["terminationGracePeriodSeconds"]
        if grace < pre_stop_s + int(exit_timeout):
            yield (
                f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_s} s + Triton's "
                f"--exit-timeout-secs {exit_timeout}: SIGKILL would cut requests Triton may still finish"
            )

    uid = dockerfile_uid()
    if pod["securityContext"].get("runAsUser") != uid:
        yield f"{where}: runAsUser {pod['securityContext'].get('runAsUser')} != the Dockerfile's USER {uid}"


def check_autoscaling(objects: list[Manifest], adapter_rules: list[Manifest]) -> Iterator[str]:
    """The HPA scales the Deployment on a metric that the Prometheus adapter rule defines."""
    deployments = {obj["metadata"]["name"] for obj in of_kind(objects, "Deployment")}
    served = set()
    for config_map in adapter_rules:
        for rule in yaml.safe_load(config_map["data"]["config.yaml"])["rules"]:
            served.add(rule["name"]["as"])
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            yield f"{name_of(hpa)}: scales {target}, which is not rendered"
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in served:
                yield (
                    f"{name_of(hpa)}: metric {metric['pods']['metric']['name']} is not one the adapter "
                    f"rules define ({sorted(served)})"
                )


def check_service_monitor(monitors: list[Manifest], base: list[Manifest]) -> Iterator[str]:
    """Each ServiceMonitor selects a Service in its namespace by labels and names one of its ports."""
    for monitor in monitors:
        spec = monitor["spec"]
        services = [
            s
            for s in of_kind(base, "Service")
            if s["metadata"].get("namespace") in spec["namespaceSelector"]["matchNames"]
            and labels_match(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        if not services:
            yield f"{name_of(monitor)}: selects no Service of the base"
        for endpoint in spec["endpoints"]:
            for service in services:
                if endpoint["port"] not in {port["name"] for port in service["spec"]["ports"]}:
                    yield f"{name_of(monitor)}: port {endpoint['port']} is not a port of {name_of(service)}"


def check_gpu(objects: list[Manifest]) -> Iterator[str]:
    """The GPU overlay asks for a GPU and loads the GPU model configs."""
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if "nvidia.com/gpu" not in container["resources"].get("limits", {}):
                yield f"{name_of(deployment)}: container {container['name']} has no nvidia.com/gpu limit"
            if flag_value(container["args"], "--model-config-name") != "gpu":
                yield f"{name_of(deployment)}: container {container['name']} lacks --model-config-name=gpu"


def deployment_references(rendered: dict[str, list[Manifest]]) -> Iterator[str]:
    """The serving Deployment against its Services, policies, probes and image, in each kustomization."""
    for name, objects in rendered.items():
        for deployment in of_kind(objects, "Deployment"):
            yield from (f"{name}: {problem}" for problem in check_deployment(deployment, objects))


def project_references(rendered: dict[str, list[Manifest]]) -> Iterator[str]:
    """Cross-references between the project's own kustomizations: autoscaling, monitoring, GPU."""
    base, monitoring = rendered["base"], rendered["monitoring"]
    adapter_rules = [cm for cm in of_kind(monitoring, "ConfigMap") if "config.yaml" in cm["data"]]
    yield from (f"base: {p}" for p in check_autoscaling(base, adapter_rules))
    monitors = of_kind(monitoring, "ServiceMonitor")
    yield from (f"monitoring: {p}" for p in check_service_monitor(monitors, base))
    yield from (f"overlays/gpu: {p}" for p in check_gpu(rendered["overlays/gpu"]))


def run_checkov(files: dict[str, Path], dockerfile: bool) -> list[Finding]:
    """Checkov's failed checks over rendered manifests (named by kustomization) and the Dockerfile."""
    checkov = Path(sys.executable).with_name("checkov")
    command = [str(checkov), "--framework", "kubernetes", "dockerfile", "-o", "json", "--quiet"]
    # --skip-download: no call to the vendor's platform; the bundled policies are the whole check.
    command += ["--skip-download", "--compact"]
    for path in files.values():
        command += ["-f", str(path)]
    if dockerfile:
        command += ["-f", str(DOCKERFILE.relative_to(ROOT))]
    # One process: forking a worker per framework costs more than it saves on a few small files.
    env = {**os.environ, "CHECKOV_PARALLELIZATION_TYPE": "none"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"check: checkov failed ({done.returncode}):\n{done.stderr[-4000:]}")
    reports = json.loads(done.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    by_path = {path.name: name for name, path in files.items()}
    findings = []
    for report in reports:
        for failed in report.get("results", {}).get("failed_checks", []):
            file_name = Path(failed["file_path"]).name
            source = (
                "docker/Dockerfile" if file_name == DOCKERFILE.name else by_path.get(file_name, file_name)
            )
            findings.append(Finding(failed["check_id"], failed["resource"], source, failed["check_name"]))
    return findings


def unlisted_findings(findings: list[Finding], allowlist: list[dict[str, Any]]) -> list[Finding]:
    """Findings that no allow-list entry covers."""
    return [f for f in findings if not any(allowed(entry, f) for entry in allowlist)]


def stale_entries(findings: list[Finding], allowlist: list[dict[str, Any]]) -> list[str]:
    """Allow-list (entry, file) pairs that match no finding: the reason they were listed is gone."""
    return [
        f"{entry['check']} {entry['resource']} in {file}"
        for entry in allowlist
        for file in entry["files"]
        if not any(
            f.check == entry["check"] and f.resource == entry["resource"] and f.file == file for f in findings
        )
    ]


def allowed(entry: dict[str, Any], finding: Finding) -> bool:
    """Whether one allow-list entry covers one finding, in whichever kustomization renders it.

    An overlay of the base inherits the base's accepted findings; ``files`` only says where the
    entry is expected to match (for the stale-entry check).
    """
    return entry["check"] == finding.check and entry["resource"] == finding.resource


def load_allowlist() -> list[dict[str, Any]]:
    """The committed allow-list; every entry must carry its reason."""
    entries = yaml.safe_load(ALLOWLIST.read_text()) or []
    for entry in entries:
        if not str(entry.get("reason", "")).strip():
            raise SystemExit(f"check: allow-list entry {entry.get('check')} in {ALLOWLIST} has no reason")
    return entries


def main(argv: list[str] | None = None) -> int:
    """Render, validate, cross-check and scan; print every problem; 0 only when there is none."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kustomization",
        type=Path,
        action="append",
        help="check only this kustomization directory (repeatable): its schemas, its Deployment's "
        "references and checkov, not the Dockerfile; default: every one of the project's",
    )
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    full = not args.kustomization
    directories = {k: HERE / k for k in KUSTOMIZATIONS} if full else {str(k): k for k in args.kustomization}

    problems: list[str] = []
    rendered = {name: render(path) for name, path in directories.items()}
    for name, objects in rendered.items():
        print(f"rendered {name}: {', '.join(name_of(obj) for obj in objects)}")
        problems += [f"{name}: {p}" for p in validate_schemas(objects, args.kubernetes_version)]
    problems += list(deployment_references(rendered))
    if full:
        problems += list(project_references(rendered))

    allowlist = load_allowlist()
    with tempfile.TemporaryDirectory(prefix="genserve-k8s-") as scratch:
        files = {}
        for index, (name, objects) in enumerate(rendered.items()):
            files[name] = Path(scratch) / f"{index}-{name.replace('/', '-').strip('-.')}.yaml"
            files[name].write_text(yaml.safe_dump_all(objects, sort_keys=False))
        findings = run_checkov(files, dockerfile=full)
    for finding in unlisted_findings(findings, allowlist):
        problems.append(f"{finding.file}: checkov {finding.check} ({finding.title}) on {finding.resource}")
    if full:
        problems += [
            f"allow-list entry matches no finding: {entry}" for entry in stale_entries(findings, allowlist)
        ]
    accepted = len(findings) - len(unlisted_findings(findings, allowlist))

    print(
        f"kubernetes-validate {kubernetes_validate.__version__} "
        f"(schemas of {args.kubernetes_version}, strict); "
        f"checkov: {len(findings)} findings, {accepted} on the allow-list"
    )
    for problem in problems:
        print(f"FAIL {problem}")
    print("manifests OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
