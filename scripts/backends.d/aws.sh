#!/usr/bin/env bash
# AWS Secrets Manager and SSM Parameter Store for the aws-* providers' tests: moto's server.
#
#   up:   install `moto[server]` into the project venv if it is missing (pip cache under
#         $SYNCD_CACHE_DIR/pip), then start two moto servers on 127.0.0.1:
#           aws       accepts any credentials (what most tests use);
#           aws-auth  checks signatures against its own IAM users (INITIAL_NO_AUTH_ACTION_COUNT),
#                     so wrong credentials really fail. `up` spends its free unauthenticated
#                     calls creating one IAM user with an allow-all policy and an access key.
#         Writes $SYNCD_RUN_DIR/aws.env (endpoints, dummy credentials, the generated key).
#   down: stop both servers (moto keeps everything in memory; nothing is left behind).
#
# Servers already running from an earlier `up` are kept; only the env file is rewritten.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

root="$(cd "$here/../.." && pwd)"
venv="${SYNCD_VENV:-$root/.venv}"
region=us-east-1
envf="$SYNCD_RUN_DIR/aws.env"
authf="$SYNCD_RUN_DIR/aws-auth.credentials"
# CreateUser, PutUserPolicy and CreateAccessKey run before moto starts checking signatures
free_calls=3

install_moto() {
  [ -x "$venv/bin/moto_server" ] && return 0
  echo "backends: installing moto[server] into $venv (pip)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  PIP_CACHE_DIR="$SYNCD_CACHE_DIR/pip" "$venv/bin/python" -m pip install -q 'moto[server]>=5' >&2
}

start_server() {
  local name="$1" extra_env="$2" port
  if running "$name" && [ -f "$SYNCD_RUN_DIR/$name.port" ] \
    && { [ "$name" != aws-auth ] || [ -f "$authf" ]; }; then
    return 0
  fi
  stop_bg "$name"
  port="$(free_port)"
  # shellcheck disable=SC2086 # extra_env is a list of NAME=VALUE words
  start_bg "$name" "$SYNCD_RUN_DIR/$name.log" env $extra_env \
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port"
  echo "$port" >"$SYNCD_RUN_DIR/$name.port"
  if ! wait_port "$port" 60; then
    tail -n 20 "$SYNCD_RUN_DIR/$name.log" >&2
    return 1
  fi
  if [ "$name" = aws-auth ]; then
    bootstrap_auth "$port"
  fi
}

bootstrap_auth() {
  # Create the one IAM user the aws-auth server accepts; its key goes to the env file.
  AWS_ACCESS_KEY_ID=bootstrap AWS_SECRET_ACCESS_KEY=bootstrap AWS_DEFAULT_REGION="$region" \
    "$venv/bin/python" - "http://127.0.0.1:$1" "$authf" <<'PY'
import json
import sys

import boto3

endpoint, out = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="syncd-test")
iam.put_user_policy(
    UserName="syncd-test",
    PolicyName="allow-all",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="syncd-test")["AccessKey"]
with open(out, "w", encoding="utf-8") as fh:
    fh.write(f"{key['AccessKeyId']} {key['SecretAccessKey']}\n")
PY
}

up() {
  install_moto
  start_server aws ""
  start_server aws-auth "INITIAL_NO_AUTH_ACTION_COUNT=$free_calls"
  local key_id secret
  read -r key_id secret <"$authf"
  umask 077
  cat >"$envf" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$SYNCD_RUN_DIR/aws.port")
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=$region
export SYNCD_AWS_AUTH_ENDPOINT=http://127.0.0.1:$(cat "$SYNCD_RUN_DIR/aws-auth.port")
export SYNCD_AWS_AUTH_ACCESS_KEY_ID=$key_id
export SYNCD_AWS_AUTH_SECRET_ACCESS_KEY=$secret
EOF
}

down() {
  stop_bg aws-auth
  stop_bg aws
  rm -f "$SYNCD_RUN_DIR/aws.port" "$SYNCD_RUN_DIR/aws-auth.port" "$authf" "$envf"
}

backend_main "$@"
