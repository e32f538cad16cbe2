#!/usr/bin/env bash
# What the Dockerfile runs, outside Docker: build the wheel (builder stage),
# install it with the server extra into a fresh environment (runtime stage),
# start the entry point and pass the HEALTHCHECK command.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=2
work=build/wheel-check
rm -rf "$work" && mkdir -p "$work"

"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels" .
wheel=$(ls "$work"/wheels/filtercast-*.whl)

# The client alone: no TensorFlow, and `serve` says which extra it needs.
"$PYTHON" -m venv "$work/client-venv"
"$work/client-venv/bin/python" -m pip install --quiet "$wheel"
( cd "$work" && client-venv/bin/python -c "
import sys, filtercast_client
from filtercast_client import Client
assert 'tensorflow' not in sys.modules
print('client-only install: filtercast_client', filtercast_client.__version__)" )
if "$work/client-venv/bin/filtercast" serve 2>"$work/serve.err"; then
  echo "wheel check: serve ran without the server extra" >&2; exit 1
fi
grep -q "needs the server extra" "$work/serve.err"

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "${wheel}[server]"

cd "$work"   # away from the source tree: only the installed wheel is importable
venv/bin/filtercast --version
venv/bin/python -m filtercast_server --help >/dev/null
port=$(venv/bin/python -c "from filtercast_client.local_server import free_port; print(free_port())")
http=$(venv/bin/python -c "from filtercast_client.local_server import free_port; print(free_port())")
venv/bin/python -m filtercast_server --weights random --port "$port" --metrics-port 0 \
  --http-port "$http" --cache "$work/cache" >server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if venv/bin/python -m filtercast_client.health --address "127.0.0.1:$port" >/dev/null 2>&1; then
    venv/bin/python -m filtercast_client.health --address "127.0.0.1:$port"
    # The gallery's files are package data: the wheel must carry them.
    for file in "" gallery/gallery.js gallery/gallery.css; do
      venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=30)" \
        "http://127.0.0.1:$http/$file"
    done
    kill -TERM "$server"
    wait "$server"
    echo "wheel check: built, installed, served (gRPC and the gallery) and stopped cleanly"
    exit 0
  fi
  sleep 1
done
echo "wheel check: the installed server never became healthy" >&2
tail -20 server.log >&2
exit 1
