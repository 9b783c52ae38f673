#!/usr/bin/env bash
# A real single-node Kubernetes (v1.34.4) for the end-to-end suite, from package registries only.
#   .ci/k8s.sh build    build kube-* and etcd from the Go module proxy into the cache (idempotent)
#   .ci/k8s.sh up       start etcd, control plane, an own containerd, kubelet, kube-proxy; import images
#   .ci/k8s.sh down     stop what `up` started and leave the machine as it was found
#   .ci/k8s.sh status   print what runs
#   .ci/k8s.sh import IMG...   import local Docker images into the cluster's containerd
# Everything lives under ${KDI_CACHE_DIR:-~/.cache/kong-db-init}/k8s (outside the clone):
#   bin/ binaries, src/ scratch build modules, logs/ the build's output (go's download chatter; its
#   end is printed when a step fails), run/ state of a running cluster (removed by `down`).
# A long build step prints a heartbeat line every KDI_HEARTBEAT_SECONDS (60), unless .ci/run (which
# prints its own) runs it.
# Tests find the cluster through run/admin.kubeconfig (exported as KUBECONFIG by `npm run e2e`).
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
CACHE="${KDI_CACHE_DIR:-$HOME/.cache/kong-db-init}/k8s"
BIN="$CACHE/bin"
RUN="$CACHE/run"
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

log() { printf '[k8s %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
LOGS="$CACHE/logs"
HEARTBEAT="${KDI_HEARTBEAT_SECONDS:-60}"
heartbeat() { # what, start time: a line every $HEARTBEAT seconds until killed (no child left behind)
  while :; do
    read -rt "$HEARTBEAT" <> <(:) || true
    log "  $1: still running ($(($(date +%s) - $2))s)"
  done
}
logged() { # what, log file, command...: output appended to the log, shown (its end) only on failure
  local what=$1 out=$2 t rc=0 hb=
  shift 2
  t=$(date +%s)
  log "$what (output: $out)"
  if [ -z "${KDI_CI_STAGE:-}" ]; then heartbeat "$what" "$t" & hb=$!; fi
  "$@" >>"$out" 2>&1 || rc=$?
  if [ -n "$hb" ]; then kill -KILL "$hb" 2>/dev/null || true; wait "$hb" 2>/dev/null || true; fi
  if [ $rc != 0 ]; then
    log "$what FAILED ($rc) after $(($(date +%s) - t))s; the end of $out:"
    tail -n 40 "$out" | sed 's/^/  | /' >&2
    return $rc
  fi
  log "  done in $(($(date +%s) - t))s"
}
die() { log "error: $*"; exit 1; }
T_STAGE=0
stage() { local now; now=$(date +%s); [ "$T_STAGE" = 0 ] || log "  ($(($now - T_STAGE))s)"; T_STAGE=$now; log "$*"; }

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
build_k8s() {
  if [ "$(cat "$BIN/.k8s-version" 2>/dev/null)" = "$K8S_VERSION" ] && all_present "${K8S_BINS[@]}"; then
    log "kubernetes $K8S_VERSION: cached in $BIN"; return 0
  fi
  command -v go >/dev/null || die "go not found: install Go >= 1.24 to build Kubernetes"
  local src="$CACHE/src/kubernetes-$K8S_VERSION" gomod mods m minor out="$LOGS/build-kubernetes-$K8S_VERSION.log"
  mkdir -p "$src" "$BIN" "$LOGS"
  : >"$out"
  cd "$src"
  [ -f go.mod ] || go mod init kdi.local/k8s-build >/dev/null 2>&1
  log "kubernetes $K8S_VERSION: go mod download k8s.io/kubernetes (output: $out)"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>>"$out" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$gomod" ] || { tail -n 20 "$out" | sed 's/^/  | /' >&2; die "could not download k8s.io/kubernetes@$K8S_VERSION's go.mod (see $out)"; }
  minor="v0.${K8S_VERSION#v1.}"
  mods=$(sed -n 's/^[[:space:]]*\(k8s\.io\/[^[:space:]]*\) v0\.0\.0$/\1/p' "$gomod" | sort -u)
  [ -n "$mods" ] || die "no k8s.io/* v0.0.0 requirements found in $gomod"
  log "replacing $(echo "$mods" | wc -l) staging modules with $minor"
  for m in $mods; do go mod edit -replace "$m=$m@$minor"; done
  local pkgs=() b
  for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$K8S_VERSION"); done
  logged "go get (downloads the modules)" "$out" go get "${pkgs[@]}" || die "go get failed (see $out)"
  pkgs=(); for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  rm -rf "$BIN/.tmp-k8s"; mkdir -p "$BIN/.tmp-k8s"
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local mnr=${K8S_VERSION#v*.}; mnr=${mnr%%.*}
  logged "go build ${K8S_BINS[*]} (the long one: about 10 min on 2 cores)" "$out" \
    env CGO_ENABLED=0 go build -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$mnr -X k8s.io/component-base/version.gitTreeState=clean" \
    -o "$BIN/.tmp-k8s/" "${pkgs[@]}" || die "go build failed (see $out)"
  for b in "${K8S_BINS[@]}"; do mv -f "$BIN/.tmp-k8s/$b" "$BIN/$b"; done
  rmdir "$BIN/.tmp-k8s"
  echo "$K8S_VERSION" >"$BIN/.k8s-version"
}

build_etcd() {
  if [ "$(cat "$BIN/.etcd-version" 2>/dev/null)" = "$ETCD_VERSION" ] && all_present etcd; then
    log "etcd $ETCD_VERSION: cached in $BIN"; return 0
  fi
  local src="$CACHE/src/etcd-$ETCD_VERSION" m out="$LOGS/build-etcd-$ETCD_VERSION.log"
  mkdir -p "$src" "$BIN" "$LOGS"
  : >"$out"
  cd "$src"
  [ -f go.mod ] || go mod init kdi.local/etcd-build >/dev/null 2>&1
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
    go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@$ETCD_VERSION"
  done
  logged "etcd $ETCD_VERSION: go get" "$out" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" || die "go get failed (see $out)"
  logged "etcd $ETCD_VERSION: go build" "$out" env CGO_ENABLED=0 go build -ldflags "-s -w" -o "$BIN/.etcd.tmp" go.etcd.io/etcd/server/v3 ||
    die "go build failed (see $out)"
  mv -f "$BIN/.etcd.tmp" "$BIN/etcd"
  echo "$ETCD_VERSION" >"$BIN/.etcd-version"
}

all_present() { local b; for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }

cmd_build() {
  local t=$(date +%s)
  build_etcd
  log "etcd ready after $(($(date +%s) - t))s"
  build_k8s
  log "build done in $(($(date +%s) - t))s"
}


# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------
NODE=kdi-node
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
BRIDGE=kdi0
ETCD_PORT=23790
API_PORT=6443
PAUSE_IMAGE=registry.k8s.io/pause:3.6
E2E_IMAGES="kong-db-init:ci kdi-standin/kong:3.6 kdi-standin/kong:3.7.1 kdi-standin/postgres:15"
SOCK="$RUN/containerd/containerd.sock"
# Host paths the kubelet or containerd create on their own: removed by `down` unless they existed before.
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /usr/libexec/kubernetes /var/lib/cni /opt/containerd /var/run/netns /etc/cni)
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)

node_ip() {
  [ -n "${KDI_NODE_IP:-}" ] && { echo "$KDI_NODE_IP"; return; }
  ip -4 route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1 | grep . ||
    ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1
}

ensure_packages() {
  local need=() c
  for c in containerd:containerd runc:runc iptables:iptables conntrack:conntrack ip:iproute2 openssl:openssl gcc:gcc; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
  done
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >"$CACHE/apt.log" 2>&1 ||
      { apt-get update >>"$CACHE/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >>"$CACHE/apt.log" 2>&1; } ||
      die "apt-get install ${need[*]} failed (see $CACHE/apt.log)"
  fi
}

record_host_state() { # what `down` must restore
  mkdir -p "$RUN/pre"
  local s p
  for s in "${SYSCTLS[@]}"; do sysctl -n "$s" >"$RUN/pre/sysctl.$s" 2>/dev/null || rm -f "$RUN/pre/sysctl.$s"; done
  for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] && echo "$p"; done >"$RUN/pre/paths"
  for t in filter nat mangle raw; do
    iptables -t "$t" -S 2>/dev/null | awk '$1=="-N"{print $2}' >"$RUN/pre/chains4.$t" || true
    ip6tables -t "$t" -S 2>/dev/null | awk '$1=="-N"{print $2}' >"$RUN/pre/chains6.$t" || true
  done
  ls /var/run/netns 2>/dev/null >"$RUN/pre/netns" || true
}

make_certs() {
  local pki="$RUN/pki" ip=$1
  mkdir -p "$pki"; cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=kdi-e2e-ca" 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cert() { # name, subject, extensions
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  local client='extendedKeyUsage=clientAuth'
  cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:$ip,IP:127.0.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  cert admin "/O=system:masters/CN=kdi-admin" "$client"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  cert controller-manager "/CN=system:kube-controller-manager" "$client"
  cert scheduler "/CN=system:kube-scheduler" "$client"
  cert kube-proxy "/CN=system:kube-proxy" "$client"
  cert kubelet-client "/O=system:nodes/CN=system:node:$NODE" "$client"
  cert kubelet "/CN=$NODE" "subjectAltName=IP:$ip,DNS:$NODE
extendedKeyUsage=serverAuth"
  chmod 600 ./*.key
}

kubeconfig() { # file, user cert name, server
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kdi
  cluster: {certificate-authority: $RUN/pki/ca.crt, server: "$3"}
users:
- name: $2
  user: {client-certificate: $RUN/pki/$2.crt, client-key: $RUN/pki/$2.key}
contexts:
- name: kdi
  context: {cluster: kdi, user: $2, namespace: default}
current-context: kdi
KC
}

# The pause image: a static C program that calls pause(), packed as a docker-save tar.
pause_tar() {
  local out="$CACHE/images/pause.tar" d
  [ -s "$out" ] && { echo "$out"; return; }
  mkdir -p "$CACHE/images"; d=$(mktemp -d)
  printf '#include <unistd.h>\n#include <signal.h>\nstatic void h(int s){(void)s;_exit(0);}\nint main(void){signal(SIGTERM,h);signal(SIGINT,h);for(;;)pause();}\n' >"$d/pause.c"
  gcc -static -Os -o "$d/pause" "$d/pause.c" && strip "$d/pause"
  mkdir -p "$d/rootfs" "$d/img"; cp "$d/pause" "$d/rootfs/pause"
  tar -C "$d/rootfs" --owner=0 --group=0 -cf "$d/img/layer.tar" pause
  local diff; diff=$(sha256sum "$d/img/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >"$d/img/config.json"
  local cfg; cfg=$(sha256sum "$d/img/config.json" | cut -d' ' -f1); mv "$d/img/config.json" "$d/img/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfg" "$PAUSE_IMAGE" >"$d/img/manifest.json"
  tar -C "$d/img" -cf "$out.tmp" . && mv "$out.tmp" "$out"
  rm -rf "$d"; echo "$out"
}

start() { # name, command... (logs in $RUN/logs/name.log, pid in $RUN/pids/name.pid)
  local name=$1; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name.pid"
}

wait_for() { # what, seconds, command...
  local what=$1 end=$(($(date +%s) + $2)); shift 2
  while [ "$(date +%s)" -le "$end" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.3; done
  die "$what not ready in time (logs: $RUN/logs)"
}

ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }
kctl() { "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }
node_ready() { kctl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; }

cmd_up() {
  all_present etcd "${K8S_BINS[@]}" || die "binaries missing in $BIN: run '$0 build' first"
  local f
  for f in "$RUN"/pids/*.pid; do
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then die "a cluster runs already ($(basename "$f" .pid) pid $(cat "$f")): '$0 down' first"; fi
  done
  [ "$(id -u)" = 0 ] || die "must run as root (kubelet, containerd, iptables)"
  local t0 ip; t0=$(date +%s)
  stage "packages"; ensure_packages
  ip=$(node_ip); [ -n "$ip" ] || die "no node address found (set KDI_NODE_IP)"
  stage "host state, certificates (node $NODE at $ip)"
  if [ -d "$RUN" ]; then log "state of an earlier cluster in $RUN: cleaning it up first"; cmd_down; T_STAGE=$(date +%s); fi
  mkdir -p "$RUN"/{pids,logs,etcd,kubelet,cni/net.d,cni/ipam,containerd/root,containerd/state}
  echo "$ip" >"$RUN/node-ip"
  record_host_state
  make_certs "$ip"
  kubeconfig "$RUN/admin.kubeconfig" admin "https://$ip:$API_PORT"
  kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager "https://$ip:$API_PORT"
  kubeconfig "$RUN/scheduler.kubeconfig" scheduler "https://$ip:$API_PORT"
  kubeconfig "$RUN/kube-proxy.kubeconfig" kube-proxy "https://$ip:$API_PORT"
  kubeconfig "$RUN/kubelet.kubeconfig" kubelet-client "https://$ip:$API_PORT"

  stage "etcd"
  start etcd "$BIN/etcd" --name kdi --data-dir "$RUN/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-cluster "kdi=http://127.0.0.1:$((ETCD_PORT + 10))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 20))" --quota-backend-bytes 1073741824
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  stage "kube-apiserver"
  local pki="$RUN/pki"
  start kube-apiserver "$BIN/kube-apiserver" --bind-address="$ip" --advertise-address="$ip" --secure-port=$API_PORT \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" --service-cluster-ip-range=$SVC_CIDR \
    --client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl=30m
  # the apiserver binds the node address (the `kubernetes` Service cannot point at loopback): pods reach it through kube-proxy
  wait_for kube-apiserver 90 kctl get --raw /readyz

  stage "controller-manager, scheduler"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --leader-elect=false --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false

  stage "containerd (own root, state and socket)"
  cat >"$RUN/containerd/config.toml" <<CT
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
CT
  cat >"$RUN/cni/net.d/10-kdi.conflist" <<CNI
{"cniVersion":"0.4.0","name":"kdi","plugins":[
 {"type":"bridge","bridge":"$BRIDGE","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$POD_CIDR"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$RUN/cni/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
CNI
  start containerd containerd --config "$RUN/containerd/config.toml"
  wait_for containerd 30 ctr -a "$SOCK" version

  stage "images"
  ctr_ images import "$(pause_tar)" >/dev/null
  # the e2e images, when Docker has them (.ci/docker.sh up); the e2e setup imports late arrivals
  local imgs=() i
  for i in ${KDI_K8S_IMAGES:-$E2E_IMAGES}; do
    command -v docker >/dev/null && docker image inspect "$i" >/dev/null 2>&1 && imgs+=("$i") || log "  (image $i not in Docker: not imported)"
  done
  [ ${#imgs[@]} -eq 0 ] || import_images "${imgs[@]}"

  stage "kubelet"
  # the kubelet's cgroupRoot must exist in every hierarchy (cgroup v1); cpuset needs its cpus/mems
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -e "${h}cgroup.procs" ] || continue
    mkdir -p "${h}kdi"
    if [ -f "${h}cpuset.cpus" ]; then cat "${h}cpuset.cpus" >"${h}kdi/cpuset.cpus"; cat "${h}cpuset.mems" >"${h}kdi/cpuset.mems"; fi
  done
  # Docker's engine drops forwarded traffic by default: let the pod bridge through (removed by `down`)
  iptables -I FORWARD -i $BRIDGE -j ACCEPT; iptables -I FORWARD -o $BRIDGE -j ACCEPT
  cat >"$RUN/kubelet/config.yaml" <<KL
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  x509: {clientCAFile: $pki/ca.crt}
  webhook: {enabled: true}
  anonymous: {enabled: false}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
cgroupDriver: cgroupfs
cgroupRoot: /kdi
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
maxPods: 60
KL
  start kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" --kubeconfig="$RUN/kubelet.kubeconfig" \
    --root-dir="$RUN/kubelet/root" --cert-dir="$RUN/kubelet/pki" --hostname-override=$NODE --node-ip="$ip" --v=1

  stage "kube-proxy"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$RUN/kube-proxy.kubeconfig" --proxy-mode=iptables \
    --cluster-cidr=10.244.0.0/16 --hostname-override=$NODE --iptables-localhost-nodeports=false \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
    --conntrack-max-per-core=0 --conntrack-min=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0

  stage "node Ready"
  wait_for "node $NODE" 120 node_ready
  wait_for "default service account" 60 kctl -n default get serviceaccount default
  stage "up in $(($(date +%s) - t0))s; KUBECONFIG=$RUN/admin.kubeconfig"
  T_STAGE=0
}

# Import local Docker images (`docker save IMG | ctr import`) into the cluster's containerd.
import_images() {
  local img
  for img in "$@"; do
    log "import $img"
    docker save "$img" | ctr_ images import --all-platforms - >/dev/null || die "could not import $img (is it built? docker images)"
  done
}

stop_pid() { # name [seconds before SIGKILL]
  local f="$RUN/pids/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-15} * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "  $1 ignores SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; }
  fi
  rm -f "$f"
}

remove_new_chains() {
  local fam t new c line save
  for fam in 4 6; do
    save=iptables; [ $fam = 6 ] && save=ip6tables
    for t in filter nat mangle raw; do
      [ -f "$RUN/pre/chains$fam.$t" ] || continue
      new=$($save -t $t -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -vxF -f "$RUN/pre/chains$fam.$t" || true)
      [ -n "$new" ] || continue
      # rules in pre-existing chains that jump to a new chain, then the new chains themselves
      { $save -t $t -S 2>/dev/null || true; } | { grep '^-A ' || true; } | while read -r line; do
        c=$(echo "$line" | awk '{print $2}')
        echo "$new" | grep -qxF "$c" && continue
        for n in $new; do
          if echo " $line " | grep -q -- "-j $n "; then eval "$save -t $t -D ${line#-A }" 2>/dev/null || true; fi
        done
      done
      for c in $new; do $save -t $t -F "$c" 2>/dev/null || true; done
      for c in $new; do $save -t $t -X "$c" 2>/dev/null || true; done
    done
  done
}

cmd_down() {
  [ -d "$RUN" ] || { log "no cluster state in $RUN: nothing to do"; return 0; }
  local t0; t0=$(date +%s)
  if [ -f "$RUN/pids/kube-apiserver.pid" ] && kctl get --raw /readyz >/dev/null 2>&1; then
    stage "delete workloads and pods"
    kctl delete namespace -l kdi-e2e=1 --wait=false >/dev/null 2>&1 || true
    kctl delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 60; i++)); do
      [ -z "$(kctl get pods -A -o name 2>/dev/null)" ] && break
      kctl delete deploy,sts,ds,rs,job --all -A --wait=false >/dev/null 2>&1 || true
      kctl delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
      sleep 1
    done
  fi
  stage "stop kube-proxy, kubelet, scheduler, controller-manager"
  stop_pid kube-proxy; stop_pid kubelet; stop_pid kube-scheduler; stop_pid kube-controller-manager
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stage "stop containers, containerd"
  if [ -S "$SOCK" ]; then
    local c
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd 20
  # shims left behind by our containerd (they carry its socket address on their command line)
  local p
  for p in $(pgrep -f "containerd-shim.*-address $SOCK" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
  stage "stop apiserver, etcd"
  stop_pid kube-apiserver 45; stop_pid etcd
  stage "restore the host"
  local m
  for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -F "$RUN" | sort -r || true); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ -d /var/run/netns ]; then
    for m in $(ls /var/run/netns); do
      grep -qxF "$m" "$RUN/pre/netns" 2>/dev/null && continue
      case $m in cni-*) ip netns delete "$m" 2>/dev/null || { umount "/var/run/netns/$m" 2>/dev/null; rm -f "/var/run/netns/$m"; } ;; esac
    done
  fi
  ip link show $BRIDGE >/dev/null 2>&1 && ip link delete $BRIDGE || true
  iptables -D FORWARD -i $BRIDGE -j ACCEPT 2>/dev/null || true; iptables -D FORWARD -o $BRIDGE -j ACCEPT 2>/dev/null || true
  remove_new_chains
  local s
  for s in "${SYSCTLS[@]}"; do
    [ -f "$RUN/pre/sysctl.$s" ] || continue
    [ "$(sysctl -n "$s" 2>/dev/null)" = "$(cat "$RUN/pre/sysctl.$s")" ] || sysctl -qw "$s=$(cat "$RUN/pre/sysctl.$s")" || true
  done
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "${h}kdi" ] && find "${h}kdi" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  for p in "${HOST_PATHS[@]}"; do
    grep -qxF "$p" "$RUN/pre/paths" 2>/dev/null && continue
    if [ -e "$p" ]; then rm -rf "$p"; fi
  done
  rm -rf "$RUN"
  stage "down in $(($(date +%s) - t0))s"
  T_STAGE=0
}

cmd_status() {
  [ -d "$RUN/pids" ] || { echo "not running"; return 3; }
  local f n rc=0
  for f in "$RUN"/pids/*.pid; do
    n=$(basename "$f" .pid)
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: DEAD"; rc=1; fi
  done
  kctl get nodes -o wide 2>/dev/null || rc=1
  echo "KUBECONFIG=$RUN/admin.kubeconfig"
  return $rc
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  import) shift; all_present kubectl && [ -S "$SOCK" ] || die "cluster not up"; import_images "$@" ;;
  kubeconfig) echo "$RUN/admin.kubeconfig" ;;
  *) echo "usage: $0 build|up|down|status|import IMG..." >&2; exit 2 ;;
esac
