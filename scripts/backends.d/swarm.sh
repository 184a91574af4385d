#!/usr/bin/env bash
# A private single-node Docker Swarm for the swarm target's tests.
#
#   up:   install Debian docker.io + busybox-static if missing, start our own dockerd (data
#         root, exec root and unix socket under $SYNCD_CACHE_DIR/swarm, no TCP listener),
#         `docker swarm init --advertise-addr 127.0.0.1`, and import a tiny busybox image
#         (images can't be pulled here). Writes $SYNCD_RUN_DIR/swarm.env.
#   down: stop the dockerd `up` started (the swarm state stays in the data root, so the next
#         `up` is fast; delete $SYNCD_CACHE_DIR/swarm to start from scratch).
#   restart: stop the running dockerd (SIGTERM, as a host shutdown does) and start it again
#         with the same swarm, services and secrets; the fault tests restart it mid-swap.
#
# A dockerd already running from an earlier `up` is kept; only the env file is rewritten.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

name=swarm
root="$SYNCD_CACHE_DIR/swarm"
sock="$root/docker.sock"
image="syncd-test/busybox:1"
envf="$SYNCD_RUN_DIR/$name.env"
logf="$SYNCD_RUN_DIR/$name.log"

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  # the image has no libc: only the static busybox works in it
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "backends: installing ${missing[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f "$SYNCD_CACHE_DIR/.apt-updated" ] || ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2
    touch "$SYNCD_CACHE_DIR/.apt-updated"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

docker_cli() {
  # the Debian package's CLI when present, else whatever `docker` is on PATH
  local cli=docker
  [ -x /usr/bin/docker ] && cli=/usr/bin/docker
  "$cli" --host "unix://$sock" "$@"
}

wait_daemon() {
  local i
  for ((i = 0; i < 600; i++)); do
    if docker_cli version >/dev/null 2>&1; then return 0; fi
    if ! running "$name"; then
      echo "backends: dockerd exited; last log lines:" >&2
      tail -n 30 "$logf" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "backends: dockerd did not answer on $sock within 60s (log: $logf)" >&2
  return 1
}

start_daemon() {
  mkdir -p "$root/data" "$root/exec"
  rm -f "$sock" "$root/dockerd.pid"
  # --bridge=none/--iptables=false: no default bridge network is needed (test services run
  # on swarm's ingress/overlay with no published ports), and the sandbox has no netfilter.
  # DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: use local images for services instead of asking a
  # registry first (none is reachable here; every task start would try and log a failure).
  start_bg "$name" "$logf" env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 dockerd \
    --host "unix://$sock" \
    --data-root "$root/data" \
    --exec-root "$root/exec" \
    --pidfile "$root/dockerd.pid" \
    --iptables=false \
    --ip6tables=false \
    --bridge=none \
    --storage-driver=vfs
  wait_daemon
}

init_swarm() {
  local state
  state="$(docker_cli info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)"
  if [ "$state" != active ]; then
    # a concrete free port (not :0): the manager's agent dials the stored address again
    # after every daemon restart, and port 0 stalls that reconnect for ~30 s
    docker_cli swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:$(free_port)" >/dev/null
  fi
  # tasks of a one-node test swarm are kept few so inspections stay small
  docker_cli swarm update --task-history-limit 2 >/dev/null
}

import_image() {
  docker_cli image inspect "$image" >/dev/null 2>&1 && return 0
  local tmp
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/run/secrets" "$tmp/rootfs/etc" "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev"
  cp /bin/busybox "$tmp/rootfs/bin/busybox"
  local applet
  for applet in sh cat sleep echo date ls test true false printf tail head grep env cp mkdir rm kill ps wc; do
    ln -s busybox "$tmp/rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/rootfs/etc/passwd"
  echo 'root:x:0:' >"$tmp/rootfs/etc/group"
  tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  docker_cli import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' "$tmp/rootfs.tar" "$image" >/dev/null
  rm -rf "$tmp"
}

up() {
  install_packages
  if ! running "$name" || ! docker_cli version >/dev/null 2>&1; then
    stop_bg "$name"
    start_daemon
  fi
  init_swarm
  import_image
  write_env
  echo "backends: swarm ready (DOCKER_HOST=unix://$sock)" >&2
}

write_env() {
  {
    echo "export DOCKER_HOST=unix://$sock"
    echo "export SYNCD_TEST_IMAGE=$image"
  } >"$envf"
}

wait_manager() {
  # after a restart the node rejoins its swarm on its own; `swarm init` would fail then
  local i
  for ((i = 0; i < 600; i++)); do
    if [ "$(docker_cli node ls --format '{{.Status}}' 2>/dev/null)" = Ready ]; then return 0; fi
    sleep 0.1
  done
  echo "backends: the swarm manager is not ready 60s after the restart (log: $logf)" >&2
  return 1
}

restart() {
  # services stay: their tasks are restarted by the swarm once the manager is back
  stop_bg "$name"
  start_daemon
  wait_manager
  write_env
}

down() {
  if running "$name" && docker_cli version >/dev/null 2>&1; then
    # services would restart their tasks on the next start; remove them so `up` is clean
    local ids
    ids="$(docker_cli service ls -q 2>/dev/null || true)"
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || docker_cli service rm $ids >/dev/null 2>&1 || true
  fi
  stop_bg "$name"
  rm -f "$envf"
}

backend_main "$@"
