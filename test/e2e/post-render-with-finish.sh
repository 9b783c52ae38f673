#!/bin/sh
# Test-only: KONG_DB_INIT_CLI for the e2e suite's upgrade scenarios. `kong-db-init post-render`,
# then the finish sidecar stage (add-finish.ts, bundled by the e2e global setup).
set -e
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
node "$KDI_E2E_DIST/cli.js" "$@" >"$tmp"
node "$KDI_E2E_DIST/add-finish.js" <"$tmp"
