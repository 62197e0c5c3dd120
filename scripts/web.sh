#!/usr/bin/env bash
# The web demo: setup (idempotent), then glmvoice-web on http://127.0.0.1:8888 with the models
# from GLMVOICE_MODEL_DIR, or the tiny random ones (noise, said plainly). Open the printed URL
# in a browser, press "Start talking". Ctrl-C to stop.
#   scripts/web.sh [--port N] [--bind ADDR] [--device cuda --dtype bfloat16] ...
# There is no authentication: keep the default loopback bind unless you mean to expose it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source pipelines/common.sh
export GLMVOICE_BUILD
web="$GLMVOICE_BUILD/tools/web/glmvoice-web"
[ -x "$web" ] || { echo "glmvoice-web was not built (needs libsoup-3.0-dev, libgstreamer-plugins-bad1.0-dev)" >&2; exit 1; }
exec "$web" --port 8888 --bind 127.0.0.1 "$@"
