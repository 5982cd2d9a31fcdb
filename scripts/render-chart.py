#!/usr/bin/env python3
"""Renders the Helm chart charts/jetflow and prints its manifests as one multi-document YAML.

Run it with the project's virtual environment (scripts/install-chart-tools.sh fills it):

    bash scripts/install-chart-tools.sh
    .tools/venv/bin/python scripts/render-chart.py [--namespace NS] [--release NAME] \\
        [--set key=value]... [--values FILE]... [--include-crds]

The chart is rendered exactly as scripts/check-chart.py renders it (the real Helm SDK, values
checked against values.schema.json, `is_install` as `helm install` does), by importing its
`render` function. The output is what `helm template` prints, without the `# Source:` comments,
in the order `helm install` creates the objects (ServiceAccount and RBAC before the Deployment),
ready for `kubectl apply -f -`. With
`--include-crds` the chart's CRDs come first, as `helm template --include-crds` puts them.
`--set` takes Helm's syntax (`a.b=1,c={x,y}`) and may be repeated; later values win.

Errors (a value the schema refuses, a template that fails) go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _check_chart() -> Any:
    """scripts/check-chart.py as a module (its file name is not an importable name)."""
    spec = importlib.util.spec_from_file_location("check_chart", ROOT / "scripts" / "check-chart.py")
    if spec is None or spec.loader is None:
        sys.exit("render-chart: cannot load scripts/check-chart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Helm's install order (pkg/release/util/kind_sorter.go), the kinds this chart can render.
INSTALL_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList",
    "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController",
    "ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
    "IngressClass", "Ingress", "APIService",
]


def install_order(doc: dict[str, Any]) -> int:
    """Position of a document's kind in Helm's install order; unknown kinds (a ServiceMonitor)
    come last, as Helm puts them."""
    kind = doc.get("kind")
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def merge(into: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Merges `values` into `into` as Helm merges successive --set and -f: maps deeply,
    everything else replaced."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def main() -> int:
    check_chart = _check_chart()
    helm = check_chart.helm
    yaml = check_chart.yaml

    parser = argparse.ArgumentParser(description="Render charts/jetflow as one multi-document YAML.")
    parser.add_argument("--namespace", default=check_chart.NAMESPACE,
                        help=f"release namespace (default {check_chart.NAMESPACE})")
    parser.add_argument("--release", default=check_chart.RELEASE,
                        help=f"release name (default {check_chart.RELEASE})")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a value in Helm's --set syntax; may be repeated")
    parser.add_argument("--values", "-f", dest="files", action="append", default=[], metavar="FILE",
                        help="a values file; may be repeated (applied before --set)")
    parser.add_argument("--include-crds", action="store_true",
                        help="print the chart's CRDs first, as helm template --include-crds")
    args = parser.parse_args()

    values: dict[str, Any] = {}
    try:
        for path in args.files:
            merge(values, yaml.safe_load(Path(path).read_text()) or {})
        for expression in args.sets:
            merge(values, helm.parse_set_string(expression))
        with helm.Chart.load(check_chart.CHART) as chart:
            docs, _notes = check_chart.render(chart, values, name=args.release, namespace=args.namespace)
            crds = [yaml.safe_load(c["data"]) for c in chart.crds] if args.include_crds else []
    except (helm.HelmError, OSError, yaml.YAMLError) as err:
        print(f"render-chart: {err}", file=sys.stderr)
        return 1

    docs.sort(key=install_order)  # stable: the template order within a kind
    sys.stdout.write(yaml.safe_dump_all(crds + docs, sort_keys=False, explicit_start=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
