#!/usr/bin/env bash
# Helpers shared by the backend scripts (sourced, never run).
# Every backend keeps its pid files, logs and env file under $SYNCD_RUN_DIR/<name>*.

: "${SYNCD_CACHE_DIR:?run through scripts/backends}"
: "${SYNCD_RUN_DIR:?run through scripts/backends}"

# free_port: print a TCP port nobody listens on (loopback).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: wait until 127.0.0.1:PORT accepts connections.
wait_port() {
  local port="$1" limit="${2:-60}" i
  for ((i = 0; i < limit * 10; i++)); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "backends: nothing listens on 127.0.0.1:$port after ${limit}s" >&2
  return 1
}

# start_bg NAME LOG CMD...: start CMD in the background, detached, pid in $SYNCD_RUN_DIR/NAME.pid.
start_bg() {
  local name="$1" logf="$2"
  shift 2
  setsid "$@" >"$logf" 2>&1 < /dev/null &
  echo $! >"$SYNCD_RUN_DIR/$name.pid"
}

# running NAME: whether the process in NAME.pid is alive.
running() {
  local pidf="$SYNCD_RUN_DIR/$1.pid"
  [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

# stop_bg NAME: stop the process group started by start_bg, then forget it.
stop_bg() {
  local pidf="$SYNCD_RUN_DIR/$1.pid" pid i
  [ -f "$pidf" ] || return 0
  pid="$(cat "$pidf")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidf" "$SYNCD_RUN_DIR/$1.env"
}

# backend_main ARG: run the backend script's `up`, `down` or (where it has one) `restart`
# function (each script ends with it).
backend_main() {
  case "${1:-}" in
    up) up ;;
    down) down ;;
    restart)
      if declare -F restart >/dev/null; then restart; else
        echo "$0: no restart" >&2
        exit 2
      fi
      ;;
    *)
      echo "usage: $0 up|down|restart" >&2
      exit 2
      ;;
  esac
}
