#!/usr/bin/env bash
# Renders and validates the Helm chart, the CRDs and the examples without a cluster (see
# scripts/check-chart.py for the list of checks). Installs its Python tools first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/install-chart-tools.sh"
exec "$root/.tools/venv/bin/python" "$root/scripts/check-chart.py" "$@"
