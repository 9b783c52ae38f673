#!/bin/sh
# Helm 4 post-renderer plugin (type postrenderer/v1):
#   helm plugin install ./charts/post-renderer/kong-db-init
#   helm install kong kong/kong -f values.yaml --post-renderer kong-db-init --post-renderer-args --image=REF
# Helm 4 (4.3.1, internal/plugin/runtime_subprocess.go) reads a post-renderer's stderr into a
# buffer that it never shows, even with --debug: the user sees only
# `plugin "kong-db-init" exited with error`. On Linux our stderr therefore goes to Helm's own
# stderr (our parent's fd 2) when we can open it; the message is also always written to
# ${TMPDIR:-/tmp}/kong-db-init-$UID/post-render.err (a directory of the user's own, mode 0700;
# the file is created new, mode 0600; see --error-file).
set -e
# (a terminal, a pipe or a file can be reopened this way; a socket cannot, and then nothing changes)
if [ -n "${HELM_PLUGIN_NAME:-}" ] && [ -w "/proc/$PPID/fd/2" ] && (: 2>>"/proc/$PPID/fd/2") 2>/dev/null; then
  exec 2>>"/proc/$PPID/fd/2"
  # Helm's stderr a regular file it writes without O_APPEND (`helm ... 2> log`): Helm writes its own
  # error after we exit, at its own offset, i.e. over whatever we appended. Our message then goes
  # behind a line of spaces (KDI_STDERR_PAD bytes) that Helm's shorter message overwrites instead.
  if [ -f "/proc/$PPID/fd/2" ]; then
    flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$PPID/fdinfo/2" 2>/dev/null || true)
    if [ -n "$flags" ] && [ $((0$flags & 02000)) -eq 0 ]; then export KDI_STDERR_PAD=1024; fi
  fi
fi
dir=$(cd "$(dirname "$0")" && pwd -P)
if [ -n "${KONG_DB_INIT_CLI:-}" ]; then exec $KONG_DB_INIT_CLI post-render "$@"; fi
if [ -f "$dir/../../../dist/cli.js" ]; then exec node "$dir/../../../dist/cli.js" post-render "$@"; fi
if command -v kong-db-init >/dev/null 2>&1; then exec kong-db-init post-render "$@"; fi
msg="kong-db-init post-render: cannot find kong-db-init (install it on PATH or set KONG_DB_INIT_CLI)"
if [ -n "${KDI_STDERR_PAD:-}" ]; then printf "%$((KDI_STDERR_PAD - 1))s\n" '' >&2; fi
echo "$msg" >&2
errdir="${TMPDIR:-/tmp}"
errdir="${errdir%/}/kong-db-init-$(id -u)"
if mkdir -m 700 "$errdir" 2>/dev/null || { [ -d "$errdir" ] && [ ! -L "$errdir" ] && [ -O "$errdir" ]; }; then
  rm -f "$errdir/post-render.err"
  (umask 077 && set -C && echo "$msg" > "$errdir/post-render.err") 2>/dev/null || true
fi
exit 2
