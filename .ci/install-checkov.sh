#!/usr/bin/env bash
# Install checkov (Kubernetes manifest policy checks, tests/ops/test_deploy.py) into
# its own virtual environment, build/checkov-venv: its dependency pins clash
# with the project's .venv, so it never goes there. Idempotent: a second run
# with the same version installed does nothing.
#
#   .ci/install-checkov.sh            # then: build/checkov-venv/bin/checkov --version
#   CHECKOV_VERSION=3.3.30 PYTHON=python3.12 .ci/install-checkov.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
venv=build/checkov-venv

if [ -x "$venv/bin/checkov" ] \
    && [ "$("$venv/bin/python" -m pip show checkov 2>/dev/null | sed -n 's/^Version: //p')" = "$CHECKOV_VERSION" ]; then
  echo "checkov $CHECKOV_VERSION already installed in $venv"
  exit 0
fi

rm -rf "$venv"
mkdir -p build
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION"
"$venv/bin/checkov" --version >/dev/null
echo "checkov $CHECKOV_VERSION installed in $venv"
