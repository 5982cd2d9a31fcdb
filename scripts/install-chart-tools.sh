#!/usr/bin/env bash
# Installs what scripts/check-chart.py needs into the project-local virtual environment
# (.tools/venv, git-ignored, shared with scripts/install-nats.sh): the Helm v4 SDK for Python
# (PyPI helm-python-sdk, which bundles Helm's Go SDK as a native library, so no helm binary)
# and kubernetes-validate (the Kubernetes JSON schemas up to 1.32, with jsonschema and PyYAML).
# Safe to run again: it does nothing when the pinned versions are already there.
set -euo pipefail

HELM_SDK_VERSION="0.2.2"
KUBERNETES_VALIDATE_VERSION="1.32.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"

python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-chart-tools: $python not found; the chart checks need Python 3 with pip and venv" >&2
    exit 1
  fi
  mkdir -p "$root/.tools"
  "$python" -m venv "$venv" || {
    echo "install-chart-tools: cannot create a virtual environment at $venv (is python3-venv installed?)" >&2
    exit 1
  }
fi

installed() {
  "$venv/bin/python" - "$HELM_SDK_VERSION" "$KUBERNETES_VALIDATE_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
ok = version("helm-python-sdk") == sys.argv[1] and version("kubernetes-validate") == sys.argv[2]
import helm_python, kubernetes_validate, jsonschema, yaml  # noqa: F401  (all importable)
sys.exit(0 if ok else 1)
PY
}

if installed; then
  exit 0
fi

echo "install-chart-tools: installing helm-python-sdk $HELM_SDK_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .tools/venv" >&2
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "helm-python-sdk==$HELM_SDK_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; then
  echo "install-chart-tools: pip could not install helm-python-sdk==$HELM_SDK_VERSION and kubernetes-validate==$KUBERNETES_VALIDATE_VERSION; check that PyPI is reachable" >&2
  exit 1
fi
if ! installed; then
  echo "install-chart-tools: the packages installed but do not import; helm-python-sdk ships a native library for $(uname -sm) only if PyPI has a wheel for it (or set HELM_C_LIB)" >&2
  "$venv/bin/python" -c "import helm_python" || true
  exit 1
fi
"$venv/bin/python" -c "import helm_python as h; print('install-chart-tools: Helm SDK', h.helm_sdk_version(), 'via helm-python-sdk', h.__version__)" >&2
