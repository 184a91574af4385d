#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for syncd's integration tests.
#
#   kubernetes.sh up     build (once, cached) and start etcd, kube-apiserver,
#                        kube-controller-manager, kube-scheduler and kwok; write the env file
#   kubernetes.sh down   stop exactly those processes
#
# No API server comes from PyPI or Debian, so the binaries are built from the Go modules pinned
# in tools/kube/go.mod into $SYNCD_CACHE_DIR/kube/<release>-<go.sum hash>/bin: a bump of any
# pinned module changes go.sum, so it gets a new directory and a rebuild; an unchanged pin
# starts from the cache in seconds. kwok plays the kubelets of two fake nodes, so pods get scheduled (by the
# real scheduler), become Ready and Deployments/StatefulSets/DaemonSets roll out for real.
# kwok's stages are its defaults plus every tools/kube/stages/*.yaml (e.g. pods that never become
# Ready), put together at every start: a stage edit needs a restart (`down`, `up`), no rebuild.
# Every start gets a fresh CA, certificates, service-account key and an empty etcd.
# See docs/testing-kubernetes.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/backends.d/lib.sh
source "$here/lib.sh"

root="$(cd "$here/../.." && pwd)"
mod="$root/tools/kube"
kube_cache="$SYNCD_CACHE_DIR/kube"
release="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$mod/go.mod")"
pin="$(sha256sum <"$mod/go.sum" | cut -c1-12)"
bin="$kube_cache/$release-$pin/bin"
run="$SYNCD_RUN_DIR/kubernetes"
stages_dir="$mod/stages"
envf="$SYNCD_RUN_DIR/kubernetes.env"
procs=(kube-kwok kube-scheduler kube-controller-manager kube-apiserver kube-etcd)
nodes=(kwok-node-0 kwok-node-1)

log() { echo "kubernetes: $*" >&2; }

# need CMD DEBIAN_PACKAGE: install the package when CMD is missing (CI starts from a clean clone).
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  if [ ! -f "$SYNCD_CACHE_DIR/.apt-updated" ]; then
    apt-get update -qq >&2 && touch "$SYNCD_CACHE_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}

go_env() {
  if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
      PATH="/usr/local/go/bin:$PATH"
    else
      # Debian's Go may be older than go.mod's `go` line; GOTOOLCHAIN=auto then fetches the
      # matching toolchain, which is itself a Go module from the module proxy.
      need go golang-go
    fi
  fi
  export PATH GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" CGO_ENABLED=0
  export GOMODCACHE="$kube_cache/go/mod" GOCACHE="$kube_cache/go/build"
  export GOFLAGS="-mod=readonly -buildvcs=false"
}

# build_one NAME PACKAGE [LDFLAGS]: build one binary unless the cache has it. One `go build` at a
# time, niced: the machine is small and shared.
build_one() {
  local name="$1" pkg="$2" extra="${3:-}" t0
  [ -x "$bin/$name" ] && return 0
  log "building $name from $pkg (slow the first time)"
  t0=$SECONDS
  (cd "$mod" && nice -n 15 go build -trimpath -ldflags="-s -w $extra" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - t0))s"
}

build() {
  local b missing=""
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler helm kwok kwok-stages.yaml; do
    [ -e "$bin/$b" ] || missing=1
  done
  [ -z "$missing" ] && return 0
  go_env
  mkdir -p "$bin"
  local t0=$SECONDS minor kv hv kwokdir f
  minor="$(echo "$release" | cut -d. -f2)"
  # What `make` in kubernetes stamps in, so the server reports its real version (Helm charts and
  # clients check it) instead of v0.0.0-master.
  kv="-X k8s.io/component-base/version.gitVersion=$release -X k8s.io/component-base/version.gitMajor=1"
  kv="$kv -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=$release -X k8s.io/client-go/pkg/version.gitMajor=1"
  kv="$kv -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  (cd "$mod" && go mod download)
  build_one etcd ./cmd/etcd
  build_one kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kv"
  build_one kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kv"
  build_one kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$kv"
  hv="$(cd "$mod" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  build_one helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$hv"
  build_one kwok sigs.k8s.io/kwok/cmd/kwok
  # kwok's controller needs Stage objects; kwokctl would supply these defaults. They ship in the
  # kwok module itself: ready nodes with leases, pods that become Ready and go away on delete.
  kwokdir="$(cd "$mod" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  : >"$bin/.kwok-stages.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "$kwokdir/kustomize/stage/$f"; } >>"$bin/.kwok-stages.tmp"
  done
  mv "$bin/.kwok-stages.tmp" "$bin/kwok-stages.yaml"
  log "build finished in $((SECONDS - t0))s"
}

# stages: print the Stage objects kwok runs with: the defaults `build` copied from the kwok module,
# then the repo's own, tools/kube/stages/*.yaml in name order. Read at every start, so a repo
# stage takes effect on the next `up` while the cached defaults stay as built.
stages() {
  local f
  echo "# Made by scripts/backends.d/kubernetes.sh: $bin/kwok-stages.yaml + $stages_dir/*.yaml"
  cat "$bin/kwok-stages.yaml"
  for f in "$stages_dir"/*.yaml; do
    [ -e "$f" ] || continue
    # A trailing newline of our own: a file that lacks one would swallow the next `---`.
    { echo "---"; echo "# $f"; cat "$f"; echo; }
  done
}

# cert NAME SUBJECT EXTENSIONS: an EC key and a certificate for it signed by the run's CA.
cert() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$run/pki/$1.key" 2>/dev/null
  openssl req -new -key "$run/pki/$1.key" -subj "$2" -out "$run/pki/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$run/pki/$1.ext"
  openssl x509 -req -in "$run/pki/$1.csr" -CA "$run/pki/ca.crt" -CAkey "$run/pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$run/pki/$1.ext" -out "$run/pki/$1.crt" 2>/dev/null
  rm -f "$run/pki/$1.csr" "$run/pki/$1.ext"
}

pki() {
  need openssl openssl
  mkdir -p "$run/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "$run/pki/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$run/pki/ca.key" -subj "/CN=syncd-test-kubernetes-ca" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$run/pki/ca.crt" 2>/dev/null
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=syncd-test-admin" "$client"
  cert controller-manager "/CN=system:kube-controller-manager" "$client"
  cert scheduler "/CN=system:kube-scheduler" "$client"
  # kwok plays the kubelet of several nodes; the Node authorizer admits one node per identity.
  cert kwok "/O=system:masters/CN=kwok" "$client"
  openssl genrsa -out "$run/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/pki/sa.key" -pubout -out "$run/pki/sa.pub" 2>/dev/null
  chmod 600 "$run"/pki/*.key
}

# kubeconfig NAME: a kubeconfig for the client certificate NAME, with absolute paths.
kubeconfig() {
  cat >"$run/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: syncd-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $run/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $run/pki/$1.crt
    client-key: $run/pki/$1.key
contexts:
- name: syncd-test
  context: {cluster: syncd-test, user: $1, namespace: default}
current-context: syncd-test
EOF
}

# api METHOD PATH [BODY]: one admin request to the API server; prints the response body.
api() {
  curl -sS --fail-with-body --max-time 10 --cacert "$run/pki/ca.crt" --cert "$run/pki/admin.crt" \
    --key "$run/pki/admin.key" -X "$1" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "https://127.0.0.1:$api_port$2"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
  local what="$1" limit="$2" i
  shift 2
  for ((i = 0; i < limit * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "$what not ready after ${limit}s; logs in $run/*.log"
  return 1
}

node_ready() {
  api GET "/api/v1/nodes/$1" | python3 -c '
import json, sys
conds = json.load(sys.stdin)["status"].get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else 1)'
}

write_env() {
  api_port="$(cat "$run/api.port")"
  cat >"$envf" <<EOF
export KUBECONFIG=$run/admin.kubeconfig
export SYNCD_KUBE_SERVER=https://127.0.0.1:$api_port
export SYNCD_KUBE_CA=$run/pki/ca.crt
export SYNCD_KUBE_HELM=$bin/helm
export SYNCD_KUBE_BIN=$bin
export SYNCD_KUBE_VERSION=$release
export SYNCD_KUBE_KWOK=1
export SYNCD_KUBE_NODES=$(IFS=,; echo "${nodes[*]}")
EOF
}

all_running() {
  local p
  for p in "${procs[@]}"; do running "$p" || return 1; done
  [ -f "$run/api.port" ] && [ -x "$bin/helm" ] && api_port="$(cat "$run/api.port")" \
    && api GET /readyz >/dev/null 2>&1
}

down() {
  local p
  for p in "${procs[@]}"; do stop_bg "$p"; done
  rm -f "$envf"
}

up() {
  need curl curl
  if all_running; then
    write_env
    log "already running on https://127.0.0.1:$api_port"
    # kwok reads its stages once, at start; a running cluster isn't disturbed for an edit.
    if ! stages | cmp -s - "$run/kwok-stages.yaml"; then
      log "kwok runs with older stages than $stages_dir/*.yaml; \`scripts/backends down kubernetes\` and \`up\` to load them"
    fi
    return 0
  fi
  down
  build
  local t0=$SECONDS etcd_port peer_port cm_port sched_port n
  rm -rf "$run"
  mkdir -p "$run"
  pki
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  api_port="$(free_port)"
  cm_port="$(free_port)"
  sched_port="$(free_port)"
  echo "$api_port" >"$run/api.port"
  stages >"$run/kwok-stages.yaml"

  # Tests only: no fsync, so a busy shared disk doesn't stall the API server.
  start_bg kube-etcd "$run/etcd.log" "$bin/etcd" --name=default --data-dir="$run/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
  wait_port "$etcd_port" 30

  # Secure port only, RBAC on. No real Service network exists: the endpoint reconciler is off
  # because the `kubernetes` Service may not point at a loopback address.
  start_bg kube-apiserver "$run/apiserver.log" "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$run/pki" --tls-cert-file="$run/pki/apiserver.crt" --tls-private-key-file="$run/pki/apiserver.key" \
    --client-ca-file="$run/pki/ca.crt" --authorization-mode=Node,RBAC --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$run/pki/sa.pub" --service-account-signing-key-file="$run/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none --allow-privileged=true \
    --profiling=false --v=1
  kubeconfig admin
  kubeconfig controller-manager
  kubeconfig scheduler
  kubeconfig kwok
  wait_for "kube-apiserver /readyz" 120 api GET /readyz

  start_bg kube-controller-manager "$run/controller-manager.log" "$bin/kube-controller-manager" \
    --kubeconfig="$run/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$run/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$run/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$cm_port" --cert-dir="$run/pki" \
    --controllers='*' --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$run/pki/sa.key" --root-ca-file="$run/pki/ca.crt" \
    --cluster-signing-cert-file="$run/pki/ca.crt" --cluster-signing-key-file="$run/pki/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 --profiling=false --v=1
  start_bg kube-scheduler "$run/scheduler.log" "$bin/kube-scheduler" \
    --kubeconfig="$run/scheduler.kubeconfig" \
    --authentication-kubeconfig="$run/scheduler.kubeconfig" \
    --authorization-kubeconfig="$run/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$run/pki" \
    --leader-elect=false --profiling=false --v=1
  # Pod IPs and node addresses are loopback values: nothing can route to a fake pod by mistake.
  start_bg kube-kwok "$run/kwok.log" "$bin/kwok" \
    --kubeconfig="$run/kwok.kubeconfig" --config="$run/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=127.240.0.0/16 --node-ip=127.0.0.1 --node-lease-duration-seconds=40

  for n in "${nodes[@]}"; do
    api POST /api/v1/nodes "$(
      cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$n",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"kubernetes.io/hostname": "$n", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "type": "kwok"}},
 "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}
EOF
    )" >/dev/null
  done
  for n in "${nodes[@]}"; do
    wait_for "node $n (kwok)" 60 node_ready "$n"
  done
  # The controller-manager is working once it has made the default ServiceAccount.
  wait_for "kube-controller-manager" 60 api GET /api/v1/namespaces/default/serviceaccounts/default
  for n in "${procs[@]}"; do
    running "$n" || { log "$n died; see $run/*.log"; return 1; }
  done
  write_env
  log "cluster $release ready on https://127.0.0.1:$api_port in $((SECONDS - t0))s (KUBECONFIG=$run/admin.kubeconfig)"
}

backend_main "$@"
