#!/usr/bin/env bash
# The Node.js client check's packages (tests/node/package.json) into build/node-client;
# tests/ops/test_node_client.py skips, saying so, where they are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "npm not found: the Node.js client test will skip"; exit 1; }
mkdir -p build/node-client
cp tests/node/package.json build/node-client/package.json
npm install --prefix build/node-client --no-audit --no-fund --silent
