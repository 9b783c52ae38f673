#!/bin/sh
# Helm 4 post-renderer plugin (type postrenderer/v1):
#   helm plugin install ./charts/post-renderer/helm4-plugin
#   helm install kong kong/kong -f values.yaml --post-renderer kong-db-init [--post-renderer-args --finish=auto]
# Helm 4 discards this plugin's stderr: errors are also written to
# ${TMPDIR:-/tmp}/kong-db-init-post-render.err (see --error-file).
set -e
dir=$(cd "$(dirname "$0")" && pwd -P)
if [ -n "${KONG_DB_INIT_CLI:-}" ]; then exec $KONG_DB_INIT_CLI post-render "$@"; fi
if [ -f "$dir/../../../dist/cli.js" ]; then exec node "$dir/../../../dist/cli.js" post-render "$@"; fi
if command -v kong-db-init >/dev/null 2>&1; then exec kong-db-init post-render "$@"; fi
msg="kong-db-init post-render: cannot find kong-db-init (install it on PATH or set KONG_DB_INIT_CLI)"
echo "$msg" >&2
echo "$msg" > "${TMPDIR:-/tmp}/kong-db-init-post-render.err"
exit 2
