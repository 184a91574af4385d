#!/usr/bin/env bash
# Azure Key Vault backend for the tests: the loopback Key Vault + Entra ID test double
# (scripts/backends.d/azure_kv_double.py) over HTTPS with its own self-signed certificate.
#
#   azure.sh up     generate (once, cached) the server certificate, a client secret and a client
#                   certificate; start the double; write $SYNCD_RUN_DIR/azure.env
#   azure.sh down   stop the double and remove the env file
#
# Lowkey Vault would be the natural choice, but its server jar is not served by Maven Central
# (only lowkey-vault-client and lowkey-vault-testcontainers are) and Docker images can't be
# pulled here; see docs/providers/azure.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

root="$(cd "$here/../.." && pwd)"
cache="$SYNCD_CACHE_DIR/azure"
envf="$SYNCD_RUN_DIR/azure.env"
name=azure

python_bin() {
  if [ -x "$root/.venv/bin/python" ]; then echo "$root/.venv/bin/python"; else echo python3; fi
}

# make_material: test-only credentials, generated once and kept in the cache (never real ones).
make_material() {
  mkdir -p "$cache"
  chmod 700 "$cache"
  if [ ! -s "$cache/server.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$cache/server.key" -out "$cache/server.pem" 2>/dev/null
  fi
  if [ ! -s "$cache/client.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=syncd-test-client" \
      -keyout "$cache/client.key" -out "$cache/client.crt" 2>/dev/null
    cat "$cache/client.key" "$cache/client.crt" >"$cache/client.pem"
  fi
  [ -s "$cache/client_secret" ] || openssl rand -hex 24 >"$cache/client_secret"
  [ -s "$cache/ids" ] || {
    echo "tenant=$(python3 -c 'import uuid; print(uuid.uuid4())')"
    echo "client=$(python3 -c 'import uuid; print(uuid.uuid4())')"
    echo "identity=$(openssl rand -hex 16)"
  } >"$cache/ids"
  chmod 600 "$cache"/*
}

up() {
  if running "$name" && [ -s "$SYNCD_RUN_DIR/$name.ports" ]; then
    write_env
    return 0
  fi
  stop_bg "$name"
  make_material
  local port iport
  port="$(free_port)"
  iport="$(free_port)"
  while [ "$iport" = "$port" ]; do iport="$(free_port)"; done
  echo "port=$port iport=$iport" >"$SYNCD_RUN_DIR/$name.ports"
  # shellcheck disable=SC1091
  . "$cache/ids"
  cat >"$cache/double.json" <<EOF
{"tenant": "$tenant", "client_id": "$client", "client_secret_file": "$cache/client_secret",
 "client_cert_file": "$cache/client.crt", "identity_header": "$identity"}
EOF
  start_bg "$name" "$SYNCD_RUN_DIR/$name.log" "$(python_bin)" "$here/azure_kv_double.py" \
    --port "$port" --identity-port "$iport" --cert "$cache/server.pem" --key "$cache/server.key" \
    --config "$cache/double.json"
  if ! wait_port "$port" 30 || ! wait_port "$iport" 10; then
    cat "$SYNCD_RUN_DIR/$name.log" >&2
    stop_bg "$name"
    return 1
  fi
  write_env
}

write_env() {
  local port iport tenant client identity
  # shellcheck disable=SC1090
  eval "$(tr ' ' '\n' <"$SYNCD_RUN_DIR/$name.ports")"
  # shellcheck disable=SC1091
  . "$cache/ids"
  cat >"$envf" <<EOF
export AZURE_KV_URL=https://127.0.0.1:$port
export AZURE_KV_CA=$cache/server.pem
export AZURE_KV_AUTHORITY=https://127.0.0.1:$port
export AZURE_KV_TENANT=$tenant
export AZURE_KV_CLIENT_ID=$client
export AZURE_KV_CLIENT_SECRET_FILE=$cache/client_secret
export AZURE_KV_CLIENT_CERT=$cache/client.pem
export AZURE_KV_IDENTITY_ENDPOINT=http://127.0.0.1:$iport/metadata/identity/oauth2/token
export AZURE_KV_IDENTITY_HEADER=$identity
export AZURE_KV_ADMIN=https://127.0.0.1:$port/_double
EOF
}

down() {
  stop_bg "$name"
  rm -f "$SYNCD_RUN_DIR/$name.ports" "$envf"
}

backend_main "$@"
