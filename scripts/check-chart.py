#!/usr/bin/env python3
"""Checks the Helm chart and the examples without a cluster.

Run it with the project's virtual environment (scripts/install-chart-tools.sh fills it):

    bash scripts/install-chart-tools.sh && .tools/venv/bin/python scripts/check-chart.py

What it checks:

* the chart renders with the real Helm SDK (helm-python-sdk, Helm v4 through its Go library)
  with the default values and with several non-default value sets, and `helm lint --strict`
  finds nothing above "info";
* every rendered manifest validates against the Kubernetes 1.32 JSON schemas in strict mode
  (kubernetes-validate: unknown fields are errors). The Prometheus Operator's kinds have no
  schema there: their metadata is validated against ObjectMeta and their selectors against
  LabelSelector; a ServiceMonitor's selector and port are checked against the Service, a
  PodMonitor's against the worker pods the operator builds (its golden Deployment) and its
  relabeling against their pipeline label, and a PrometheusRule's groups and rules against the
  fields the Prometheus Operator's CRD allows (an alert with an expr, durations, a severity and
  a summary); the Grafana dashboards' ConfigMap carries the sidecar's label and valid dashboard
  JSON. Whether the dashboards and alerts use only names the binaries export is checked on a
  running cluster by e2e/cluster/tests/observability.rs;
* what the templates must say: images, operator flags, probes, the restricted security
  context, RBAC subjects that name the ServiceAccount, selectors that match the pods;
* values.schema.json accepts the defaults and rejects wrong values (a string replica count,
  an unknown key, a wrong enum), both in Helm's schema check and in a render;
* the chart's crds/ equal crds/generated/ byte for byte, Helm loads them as CRDs, and each is a
  valid apiextensions.k8s.io/v1 CustomResourceDefinition;
* e2e/kind/run.sh parses, and on a machine without Docker, kind, helm or kubectl it fails fast
  (exit 2, naming what is missing) before touching anything; the workflows run the scripts
  they are meant to run;
* every document of examples/*.yaml validates: jetflow kinds against the CRD's
  openAPIV3Schema (structurally, with unknown fields rejected as `kubectl apply
  --validate=strict` would), other kinds (a Secret) against the Kubernetes schemas. The CEL
  rules of the CRDs are evaluated by the Rust test crds/tests/manifests.rs.

It prints one line per check and closes with "chart: N passed, N failed"; the exit code is 1
when any check failed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

try:
    import helm_python as helm
    import jsonschema
    import kubernetes_validate
    import referencing
    import yaml
except ImportError as err:  # pragma: no cover - the message is the point
    sys.exit(
        f"check-chart: {err}; run `bash scripts/install-chart-tools.sh` and use "
        ".tools/venv/bin/python"
    )

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "jetflow"
KUBE_VERSION = "1.32"
RELEASE = "jetflow"
NAMESPACE = "jetflow-system"

Doc = dict[str, Any]


class Report:
    """Counts checks and prints each one."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped: list[str] = []

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the run
            self.failed += 1
            detail = str(err) or traceback.format_exc()
            print(f"FAIL {name}: {detail}")
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"skip {what}")


class CheckError(Exception):
    """A check that did not hold."""


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckError(message)


# ---------------------------------------------------------------------------------------------
# Kubernetes schemas
# ---------------------------------------------------------------------------------------------

def _definitions() -> tuple[referencing.Registry, str]:
    """The registry of Kubernetes definitions that kubernetes-validate ships, and their URI."""
    import importlib.resources

    base = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    folder = f"v{KUBE_VERSION}.0-local-strict"
    defs = json.loads(base.joinpath(folder, "_definitions.json").read_text())
    resource = referencing.Resource.from_contents(defs)
    return resource @ referencing.Registry(), defs["$id"]


REGISTRY, DEFS_URI = _definitions()


def validate_definition(value: Any, definition: str) -> None:
    """Validates a value against one Kubernetes definition, such as ObjectMeta."""
    schema = {"$ref": f"{DEFS_URI}#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path)
        raise CheckError(f"{definition} at /{where}: {first.message}")


def validate_kubernetes(doc: Doc) -> None:
    """Strict validation of a built-in kind against the Kubernetes schemas."""
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(p) for p in err.path)
        raise CheckError(f"{describe(doc)} at /{where}: {err.message}") from None
    except kubernetes_validate.SchemaNotFoundError as err:
        raise CheckError(err.message) from None


def describe(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def crd_schema_to_jsonschema(schema: Any) -> Any:
    """Turns a CRD openAPIV3Schema into JSON Schema with the API server's structural rules.

    `nullable` becomes a null type, `x-kubernetes-int-or-string` an integer-or-string, and an
    object with `properties` but no `additionalProperties` and no
    `x-kubernetes-preserve-unknown-fields` rejects unknown fields (the server would prune them
    silently, which hides typos; `kubectl apply --validate=strict` rejects them).
    """
    if isinstance(schema, list):
        return [crd_schema_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: crd_schema_to_jsonschema(v) for k, v in schema.items()
           if k not in ("x-kubernetes-validations", "description")}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """The openAPIV3Schema of each generated CRD, by kind."""

    def __init__(self, folder: Path) -> None:
        self.by_kind: dict[str, Any] = {}
        for path in sorted(folder.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            kind = crd["spec"]["names"]["kind"]
            version = crd["spec"]["versions"][0]
            schema = crd_schema_to_jsonschema(version["schema"]["openAPIV3Schema"])
            # metadata is checked against ObjectMeta on its own, as the API server does.
            schema.get("properties", {}).pop("metadata", None)
            self.by_kind[kind] = (f"{crd['spec']['group']}/{version['name']}", schema)

    def validate(self, doc: Doc) -> None:
        kind = doc.get("kind")
        expect(kind in self.by_kind, f"no CRD for kind {kind}")
        api_version, schema = self.by_kind[kind]
        expect(doc.get("apiVersion") == api_version,
               f"{describe(doc)}: apiVersion {doc.get('apiVersion')}, the CRD serves {api_version}")
        validate_definition(doc.get("metadata", {}), "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        # apiVersion, kind and metadata are the API server's, not the CRD schema's.
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body),
                        key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.path)
            raise CheckError(f"{describe(doc)}: {where}: {first.message}")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def render(chart: helm.Chart, values: dict[str, Any], name: str = RELEASE,
           namespace: str = NAMESPACE) -> tuple[list[Doc], str]:
    """Renders like `helm install`: schema-checked values, release name and namespace."""
    manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    docs: list[Doc] = []
    notes = ""
    for name, text in sorted(manifests.items()):
        if name.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs, notes


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    expect(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


WORKER_GOLDEN = ROOT / "operator" / "src" / "pipeline" / "build" / "golden" / "deployment.yaml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# The fields of a rule in the Prometheus Operator's PrometheusRule CRD.
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_FIELDS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset", "labels"}


def check_pod_monitor(doc: Doc) -> None:
    validate_definition(doc["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    spec = doc["spec"]
    expect(set(spec) <= {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel",
                         "podTargetLabels", "sampleLimit"}, f"unknown spec fields {sorted(spec)}")
    validate_definition(spec["selector"], "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
    namespaces = spec["namespaceSelector"]
    expect(namespaces == {"any": True} or list(namespaces) == ["matchNames"],
           f"namespaceSelector {namespaces}")
    worker = yaml.safe_load(WORKER_GOLDEN.read_text())
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    for key, value in spec["selector"]["matchLabels"].items():
        expect(pod_labels.get(key) == value, f"selector {key}={value} misses the worker pods {pod_labels}")
    ports = {p["name"] for c in worker["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    for endpoint in spec["podMetricsEndpoints"]:
        expect(set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings",
                                 "metricRelabelings", "honorLabels", "scheme"},
               f"unknown endpoint fields {sorted(endpoint)}")
        expect(endpoint["port"] in ports, f"port {endpoint['port']} not a worker port {ports}")
        for key in ("interval", "scrapeTimeout"):
            expect(bool(DURATION.match(str(endpoint[key]))), f"{key} {endpoint[key]}")
        for relabel in endpoint.get("relabelings", []):
            for source in relabel.get("sourceLabels", []):
                label = source.removeprefix("__meta_kubernetes_pod_label_")
                expect(any(re.sub(r"[^a-zA-Z0-9_]", "_", k) == label for k in pod_labels),
                       f"relabeling reads {source}, a label the worker pods do not have")


def check_prometheus_rule(doc: Doc) -> None:
    validate_definition(doc["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    expect(list(doc["spec"]) == ["groups"], f"spec fields {sorted(doc['spec'])}")
    names = set()
    for group in doc["spec"]["groups"]:
        expect(set(group) <= GROUP_FIELDS, f"unknown group fields {sorted(set(group) - GROUP_FIELDS)}")
        expect(group["name"] not in names, f"group {group['name']} twice")
        names.add(group["name"])
        expect(bool(group["rules"]), f"group {group['name']} has no rules")
        for rule in group["rules"]:
            where = f"rule {rule.get('alert')}"
            expect(set(rule) <= RULE_FIELDS, f"{where}: unknown fields {sorted(set(rule) - RULE_FIELDS)}")
            expect(isinstance(rule.get("alert"), str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", rule["alert"]),
                   f"{where}: alert name")
            expect(isinstance(rule.get("expr"), str) and rule["expr"].strip(), f"{where}: expr")
            expect(rule["expr"].count("(") == rule["expr"].count(")"), f"{where}: unbalanced parentheses")
            if "for" in rule:
                expect(bool(DURATION.match(str(rule["for"]))), f"{where}: for {rule['for']}")
            expect(bool(rule.get("labels", {}).get("severity")), f"{where}: no severity label")
            for key, value in {**rule.get("labels", {}), **rule.get("annotations", {})}.items():
                expect(isinstance(value, str), f"{where}: {key} is not a string")
            summary = rule.get("annotations", {}).get("summary", "")
            expect("{{ $labels." in summary, f"{where}: the summary names no label: {summary!r}")


def check_dashboards(doc: Doc) -> None:
    expect(doc["metadata"]["labels"].get("grafana_dashboard") == "1", "no grafana_dashboard label")
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    expect(sorted(doc["data"]) == files, f"ConfigMap holds {sorted(doc['data'])}, dashboards/ {files}")
    uids = set()
    for name, text in doc["data"].items():
        dashboard = json.loads(text)
        expect(dashboard.get("uid") and dashboard["uid"] not in uids, f"{name}: uid")
        uids.add(dashboard["uid"])
        expect(isinstance(dashboard.get("title"), str), f"{name}: title")
        ids = [p["id"] for p in dashboard["panels"]]
        expect(len(ids) == len(set(ids)), f"{name}: panel ids repeat")
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        expect(len(exprs) >= 10, f"{name}: {len(exprs)} queries")
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            expect(0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{name}: panel {panel['title']} off the grid")


def validate_rendered(report: Report, scenario: str, docs: list[Doc]) -> None:
    for doc in docs:
        kind = doc["kind"]
        if kind == "PodMonitor":
            report.check(f"[{scenario}] {describe(doc)} metadata, selector, port and relabeling select "
                         "the worker pods", lambda doc=doc: check_pod_monitor(doc))
            continue
        if kind == "PrometheusRule":
            report.check(f"[{scenario}] {describe(doc)} groups and rules have the CRD's shape",
                         lambda doc=doc: check_prometheus_rule(doc))
            continue
        if kind == "ConfigMap" and "grafana_dashboard" in doc["metadata"].get("labels", {}):
            report.check(f"[{scenario}] {describe(doc)} holds the dashboards as JSON",
                         lambda doc=doc: check_dashboards(doc))
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            def service_monitor(doc: Doc = doc) -> None:
                validate_definition(doc["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
                validate_definition(doc["spec"]["selector"], "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
                service = one(docs, "Service")
                for key, value in doc["spec"]["selector"]["matchLabels"].items():
                    expect(service["metadata"]["labels"].get(key) == value,
                           f"selector {key}={value} does not select the metrics Service")
                ports = {p["name"] for p in service["spec"]["ports"]}
                for endpoint in doc["spec"]["endpoints"]:
                    expect(endpoint["port"] in ports, f"endpoint port {endpoint['port']} not in Service")
            report.check(f"[{scenario}] {describe(doc)} metadata, selector and port", service_monitor)
            report.skip(f"[{scenario}] {describe(doc)} spec schema: kubernetes-validate ships no "
                        "monitoring.coreos.com schemas")
            continue
        report.check(f"[{scenario}] {kind}/{doc['metadata']['name']} valid for Kubernetes {KUBE_VERSION}",
                     lambda doc=doc: validate_kubernetes(doc))


def check_common(docs: list[Doc], notes: str, values: dict[str, Any]) -> None:
    """What every rendering must say, whatever the values."""
    merged = values
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for key, value in deployment["spec"]["selector"]["matchLabels"].items():
        expect(labels.get(key) == value, f"Deployment selector {key}={value} misses the pods")
    for doc in docs:
        expect(doc["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE,
               f"{describe(doc)} lacks the instance label")
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            namespace = NAMESPACE
            if "grafana_dashboard" in doc["metadata"].get("labels", {}):
                namespace = merged["metrics"]["grafanaDashboard"]["namespace"] or NAMESPACE
            expect(doc["metadata"].get("namespace") == namespace, f"{describe(doc)} not in {namespace}")

    spec = pod["spec"]
    (container,) = spec["containers"]
    image = merged["image"]
    tag = image.get("tag") or "0.1.0"
    expect(container["image"] == f"{image['repository']}:{tag}", f"image {container['image']}")
    expect(container["imagePullPolicy"] == image["pullPolicy"], "imagePullPolicy")
    args = container["args"]
    expect(f"--nats-url={merged['nats']['url']}" in args, f"--nats-url missing in {args}")
    worker = merged["worker"]["image"]
    worker_tag = worker.get("tag") or image.get("tag") or "0.1.0"
    expect(f"--worker-image={worker['repository']}:{worker_tag}" in args, f"--worker-image in {args}")
    expect(f"--leader-election={str(merged['leaderElection']['enabled']).lower()}" in args,
           f"--leader-election in {args}")
    if merged.get("watchNamespace"):
        expect(f"--watch-namespace={merged['watchNamespace']}" in args, f"--watch-namespace in {args}")
    else:
        expect(not any(a.startswith("--watch-namespace") for a in args), "--watch-namespace set")
    env = {e["name"]: e for e in container["env"]}
    expect(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "POD_NAMESPACE")
    expect(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "POD_NAME")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expect(ports.get("metrics") == merged["metrics"]["port"], f"metrics port {ports}")
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        expect(get["path"] == "/healthz" and get["port"] == "metrics", f"{probe} {get}")

    sc = container["securityContext"]
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
    expect("ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities.drop ALL")
    psc = spec["securityContext"]
    expect(psc.get("runAsNonRoot") is True, "runAsNonRoot")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")

    account = spec["serviceAccountName"]
    if merged["serviceAccount"]["create"]:
        expect(one(docs, "ServiceAccount")["metadata"]["name"] == account, "ServiceAccount name")
    else:
        expect(not any(d["kind"] == "ServiceAccount" for d in docs), "ServiceAccount created")
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]}
        expect(("ServiceAccount", account, NAMESPACE) in subjects,
               f"{describe(binding)} does not bind ServiceAccount {account}")
        role_kind = binding["roleRef"]["kind"]
        expect(any(d["kind"] == role_kind and d["metadata"]["name"] == binding["roleRef"]["name"]
                   for d in docs), f"{describe(binding)} refers to a {role_kind} not in the chart")

    if merged["leaderElection"]["enabled"]:
        role = next(d for d in docs if d["kind"] == "Role" and "leader-election" in d["metadata"]["name"])
        rules = [(tuple(r["apiGroups"]), tuple(r["resources"]), set(r["verbs"])) for r in role["rules"]]
        expect(rules == [(("coordination.k8s.io",), ("leases",), {"get", "create", "update"})],
               f"leader-election rules {rules}")

    service = one(docs, "Service")
    for key, value in service["spec"]["selector"].items():
        expect(labels.get(key) == value, f"Service selector {key}={value} misses the pods")
    expect(service["spec"]["ports"][0]["targetPort"] == "metrics", "Service targetPort")

    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    expect(len(monitors) == (1 if merged["metrics"]["serviceMonitor"]["enabled"] else 0),
           f"{len(monitors)} ServiceMonitors")
    for kind, key in (("PodMonitor", "podMonitor"), ("PrometheusRule", "prometheusRule")):
        found = [d for d in docs if d["kind"] == kind]
        expect(len(found) == (1 if merged["metrics"][key]["enabled"] else 0), f"{len(found)} {kind}s")
    dashboards = [d for d in docs if d["kind"] == "ConfigMap"]
    expect(len(dashboards) == (1 if merged["metrics"]["grafanaDashboard"]["enabled"] else 0),
           f"{len(dashboards)} dashboard ConfigMaps")
    expect("kubectl get" in notes and "pipelines" in notes and "examples/" in notes,
           "NOTES.txt does not say what to do next")


def check_chart(report: Report) -> None:
    scenarios: list[tuple[str, dict[str, Any], Callable[[list[Doc], dict[str, Any]], None]]] = [
        ("defaults", {}, lambda docs, merged: (
            expect(one(docs, "Deployment")["spec"]["replicas"] == 1, "replicas"),
        )),
        ("ha-monitored", {
            "replicaCount": 2,
            "image": {"repository": "registry.example.com/jetflow", "tag": "1.2.3", "pullPolicy": "Always"},
            "worker": {"image": {"repository": "registry.example.com/jetflow-worker", "tag": "1.2.4"}},
            "nats": {"url": "tls://nats-a.nats:4222,tls://nats-b.nats:4222"},
            "watchNamespace": "apps",
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            "imagePullSecrets": [{"name": "registry"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "jetflow"}}}}]}},
            "podAnnotations": {"example.com/team": "data"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}},
        }, lambda docs, merged: (
            expect(one(docs, "Deployment")["spec"]["replicas"] == 2, "replicas"),
            expect(one(docs, "ServiceMonitor")["metadata"]["labels"].get("release") == "prometheus",
                   "ServiceMonitor labels"),
            expect(one(docs, "Deployment")["spec"]["template"]["spec"]["nodeSelector"]
                   == {"kubernetes.io/os": "linux"}, "nodeSelector"),
        )),
        ("monitoring", {
            "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                        "prometheusRule": {"enabled": True, "checkpointStaleSeconds": 120,
                                           "severity": {"lagGrowing": "info"}},
                        "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                             "annotations": {"grafana_folder": "jetflow"}}},
        }, lambda docs, merged: (
            expect(one(docs, "PodMonitor")["metadata"]["labels"].get("release") == "prometheus",
                   "PodMonitor labels"),
            expect(one(docs, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True},
                   "PodMonitor watches every namespace"),
            expect("> 120" in next(r["expr"] for g in one(docs, "PrometheusRule")["spec"]["groups"]
                                   for r in g["rules"] if r["alert"] == "JetflowCheckpointStale"),
                   "checkpointStaleSeconds not in the alert"),
            expect(next(r["labels"]["severity"] for g in one(docs, "PrometheusRule")["spec"]["groups"]
                        for r in g["rules"] if r["alert"] == "JetflowLagGrowing") == "info",
                   "severity.lagGrowing not in the alert"),
            expect({r["alert"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
                   >= {"JetflowCheckpointStale", "JetflowLagGrowing", "JetflowSplitStopped",
                       "JetflowDeadLetters"}, "an alert of the issue is missing"),
            expect(next(d for d in docs if d["kind"] == "ConfigMap")["metadata"]["namespace"] == "monitoring",
                   "dashboards namespace"),
        )),
        ("existing-account", {
            "serviceAccount": {"create": False, "name": "platform-operator"},
            "fullnameOverride": "flows",
            "leaderElection": {"enabled": False},
        }, lambda docs, merged: (
            expect(one(docs, "Deployment")["metadata"]["name"] == "flows", "fullnameOverride"),
            expect(not any("leader-election" in d["metadata"]["name"] for d in docs),
                   "leader-election RBAC rendered while disabled"),
        )),
    ]
    with helm.Chart.load(CHART) as chart:
        report.check("Chart.yaml is apiVersion v2", lambda: expect(
            chart.metadata.get("apiVersion") == "v2", str(chart.metadata.get("apiVersion"))))

        def lint() -> None:
            result = helm.lint(CHART, strict=True, kube_version=f"v{KUBE_VERSION}.0", namespace=NAMESPACE)
            problems = [m for m in result["messages"] if m["severity"] >= 2] + result["errors"]
            expect(not problems, f"helm lint: {problems}")
        report.check("helm lint --strict", lint)

        for scenario, values, extra in scenarios:
            try:
                docs, notes = render(chart, values)
                merged = chart.merge_values(values)
            except helm.HelmError as err:
                report.check(f"[{scenario}] renders", lambda err=err: (_ for _ in ()).throw(CheckError(str(err))))
                continue
            report.check(f"[{scenario}] renders ({len(docs)} objects: "
                         f"{', '.join(sorted(d['kind'] for d in docs))})", lambda: None)
            validate_rendered(report, scenario, docs)
            report.check(f"[{scenario}] templates say what the values ask",
                         lambda docs=docs, notes=notes, merged=merged: check_common(docs, notes, merged))
            report.check(f"[{scenario}] scenario specifics",
                         lambda docs=docs, merged=merged, extra=extra: (extra(docs, merged), None)[1])

        report.check("values.schema.json accepts the defaults", lambda: chart.validate_schema({}))
        wrong: list[tuple[str, dict[str, Any]]] = [
            ("replicaCount: \"two\"", {"replicaCount": "two"}),
            ("replicaCount: 0", {"replicaCount": 0}),
            ("an unknown top-level key", {"replicas": 2}),
            ("image.pullPolicy: Sometimes", {"image": {"pullPolicy": "Sometimes"}}),
            ("nats.url without a NATS scheme", {"nats": {"url": "http://nats:4222"}}),
            ("metrics.serviceMonitor.enabled: \"yes\"", {"metrics": {"serviceMonitor": {"enabled": "yes"}}}),
            ("an unknown key under worker", {"worker": {"imageTag": "x"}}),
            ("metrics.prometheusRule.lagWindow: \"15 minutes\"",
             {"metrics": {"prometheusRule": {"enabled": True, "lagWindow": "15 minutes"}}}),
            ("an unknown key under metrics.podMonitor", {"metrics": {"podMonitor": {"enable": True}}}),
            ("securityContext.capabilities.drop not a list", {"securityContext": {"capabilities": {"drop": "ALL"}}}),
        ]
        for label, values in wrong:
            def rejected(values: dict[str, Any] = values) -> None:
                try:
                    chart.validate_schema(values)
                except helm.HelmValuesError:
                    pass
                else:
                    raise CheckError("validate_schema accepted it")
                try:
                    chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
                except helm.HelmValuesError:
                    return
                raise CheckError("render accepted it")
            report.check(f"values.schema.json rejects {label}", rejected)

        def two_replicas_need_leader_election() -> None:
            try:
                chart.render({"replicaCount": 2, "leaderElection": {"enabled": False}},
                             name=RELEASE, namespace=NAMESPACE)
            except helm.HelmRenderError as err:
                expect("leaderElection" in str(err), str(err))
                return
            raise CheckError("rendered two replicas without leader election")
        report.check("replicaCount 2 without leader election fails with a message", two_replicas_need_leader_election)

        def crds_loaded_by_helm() -> None:
            names = sorted(Path(c["filename"]).name for c in chart.crds)
            expected = sorted(p.name for p in (ROOT / "crds" / "generated").glob("*.yaml"))
            expect(names == expected, f"Helm loads CRDs {names}, generated {expected}")
        report.check("Helm loads crds/ as the chart's CRDs", crds_loaded_by_helm)


def check_crds(report: Report) -> None:
    generated = ROOT / "crds" / "generated"
    shipped = CHART / "crds"

    def same_files() -> None:
        a = sorted(p.name for p in generated.iterdir())
        b = sorted(p.name for p in shipped.iterdir())
        expect(a == b, f"crds/generated has {a}, charts/jetflow/crds has {b}")
        for name in a:
            expect((generated / name).read_bytes() == (shipped / name).read_bytes(),
                   f"charts/jetflow/crds/{name} differs from crds/generated/{name}; "
                   "run `cargo run -p jetflow-crds --bin crdgen`")
    report.check("charts/jetflow/crds equal crds/generated byte for byte", same_files)
    for path in sorted(shipped.glob("*.yaml")):
        report.check(f"{path.name} is a valid CustomResourceDefinition for Kubernetes {KUBE_VERSION}",
                     lambda path=path: validate_kubernetes(yaml.safe_load(path.read_text())))


def check_examples(report: Report) -> None:
    schemas = CrdSchemas(ROOT / "crds" / "generated")
    files = sorted((ROOT / "examples").rglob("*.yaml"))
    report.check("examples/ holds manifests", lambda: expect(bool(files), "no examples"))
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        rel = path.relative_to(ROOT)
        report.check(f"{rel}: has a Pipeline", lambda docs=docs: expect(
            any(d.get("kind") == "Pipeline" for d in docs), "no Pipeline"))
        for doc in docs:
            if str(doc.get("apiVersion", "")).startswith("jetflow.io/"):
                report.check(f"{rel}: {describe(doc)} valid against its CRD schema",
                             lambda doc=doc: schemas.validate(doc))
            else:
                report.check(f"{rel}: {describe(doc)} valid for Kubernetes {KUBE_VERSION}",
                             lambda doc=doc: validate_kubernetes(doc))

    # The validator must be able to fail: wrong documents are rejected.
    base = {"apiVersion": "jetflow.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"},
            "spec": {"source": {"jetstream": {"stream": "orders"}},
                     "sink": {"jetstream": {"stream": "copy"}}}}
    report.check("CRD schema accepts a minimal Pipeline", lambda: schemas.validate(base))
    # Each wrong document with a word its error must contain, so that it fails for its reason.
    wrong: list[tuple[str, Callable[[Doc], None], str]] = [
        ("an unknown spec field", lambda d: d["spec"].update(paralelism=2), "paralelism"),
        ("a wrong enum (start.from: Beginning)",
         lambda d: d["spec"]["source"]["jetstream"].update(start={"from": "Beginning"}), "Beginning"),
        ("a bad duration (checkpoint.interval: 5 seconds)",
         lambda d: d["spec"].update(checkpoint={"interval": "5 seconds"}), "checkpoint.interval"),
        ("a string parallelism", lambda d: d["spec"].update(parallelism="three"), "spec.parallelism"),
        ("a missing sink", lambda d: d["spec"].pop("sink"), "'sink' is a required property"),
        ("a bad metadata name type", lambda d: d["metadata"].update(name=5), "ObjectMeta at /name"),
    ]
    for label, mutate, reason in wrong:
        def rejected(mutate: Callable[[Doc], None] = mutate, reason: str = reason) -> None:
            doc = copy.deepcopy(base)
            mutate(doc)
            try:
                schemas.validate(doc)
            except CheckError as err:
                expect(reason in str(err), f"rejected, but not for {reason!r}: {err}")
                return
            raise CheckError("accepted")
        report.check(f"CRD schema rejects {label}", rejected)


def check_e2e_scripts(report: Report) -> None:
    script = ROOT / "e2e" / "kind" / "run.sh"
    report.check("e2e/kind/run.sh parses (bash -n)", lambda: expect(
        subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0,
        "bash -n failed"))

    def fails_fast_without_tools() -> None:
        # A PATH with only what the preflight itself needs: no docker, kind, helm, kubectl.
        with tempfile.TemporaryDirectory() as bindir:
            for tool in ("dirname",):
                found = subprocess.run(["bash", "-c", f"command -v {tool}"],
                                       capture_output=True, text=True).stdout.strip()
                os.symlink(found, os.path.join(bindir, tool))
            env = {"PATH": bindir, "HOME": os.environ.get("HOME", "/tmp")}
            bash = subprocess.run(["bash", "-c", "command -v bash"], capture_output=True,
                                  text=True).stdout.strip()
            result = subprocess.run([bash, str(script)], env=env, capture_output=True,
                                    text=True, timeout=30)
        expect(result.returncode == 2, f"exit {result.returncode}: {result.stderr}")
        for tool in ("docker", "kind", "helm", "kubectl"):
            expect(tool in result.stderr, f"does not name {tool}: {result.stderr}")
    report.check("e2e/kind/run.sh fails fast with a clear message without Docker and kind",
                 fails_fast_without_tools)

    def workflows() -> None:
        folder = ROOT / ".github" / "workflows"
        runs = {}
        for path in sorted(folder.glob("*.yml")):
            flow = yaml.safe_load(path.read_text())
            steps = [step for job in flow["jobs"].values() for step in job["steps"]]
            runs[path.name] = " ".join(step.get("run", "") for step in steps)
        expect("bash .ci/run" in runs.get("ci.yml", ""), f"ci.yml does not run .ci/run: {runs}")
        expect("bash e2e/kind/run.sh" in runs.get("e2e-kind.yml", ""),
               f"e2e-kind.yml does not run e2e/kind/run.sh: {runs}")
    report.check(".github/workflows run .ci/run and e2e/kind/run.sh", workflows)


def main() -> int:
    started = time.monotonic()
    report = Report()
    print(f"check-chart: Helm SDK {helm.helm_sdk_version()}, Kubernetes schemas {KUBE_VERSION}")
    check_chart(report)
    check_crds(report)
    check_examples(report)
    check_e2e_scripts(report)
    print(f"check-chart: {len(report.skipped)} skipped, took {time.monotonic() - started:.1f}s")
    print(f"chart: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
