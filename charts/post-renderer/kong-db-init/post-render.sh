#!/bin/sh
# Helm 4 post-renderer plugin (type postrenderer/v1):
#   helm plugin install ./charts/post-renderer/kong-db-init
#   helm install kong kong/kong -f values.yaml --post-renderer kong-db-init --post-renderer-args --image=REF
# Helm 4 (4.3.1, internal/plugin/runtime_subprocess.go) reads a post-renderer's stderr into a
# buffer that it never shows, even with --debug: the user sees only
# `plugin "kong-db-init" exited with error`. On Linux our stderr therefore goes to Helm's own
# stderr (our parent's fd 2) when we can open it; the message is also always written to
# ${TMPDIR:-/tmp}/kong-db-init-post-render.err (see --error-file).
set -e
# (a terminal, a pipe or a file can be reopened this way; a socket cannot, and then nothing changes)
if [ -n "${HELM_PLUGIN_NAME:-}" ] && [ -w "/proc/$PPID/fd/2" ] && (: 2>>"/proc/$PPID/fd/2") 2>/dev/null; then
  exec 2>>"/proc/$PPID/fd/2"
fi
dir=$(cd "$(dirname "$0")" && pwd -P)
if [ -n "${KONG_DB_INIT_CLI:-}" ]; then exec $KONG_DB_INIT_CLI post-render "$@"; fi
if [ -f "$dir/../../../dist/cli.js" ]; then exec node "$dir/../../../dist/cli.js" post-render "$@"; fi
if command -v kong-db-init >/dev/null 2>&1; then exec kong-db-init post-render "$@"; fi
msg="kong-db-init post-render: cannot find kong-db-init (install it on PATH or set KONG_DB_INIT_CLI)"
echo "$msg" >&2
echo "$msg" > "${TMPDIR:-/tmp}/kong-db-init-post-render.err"
exit 2
