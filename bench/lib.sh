# shellcheck shell=bash
# Shared by the bench/ scenarios (sourced, not run).
#
# Environment:
#   NOTIFY_BIN      server binary to use (default: target/release, built if needed;
#                   BENCH_PROFILE=debug uses target/debug)
#   LOADGEN_BIN     load generator binary (default: campusbite-loadgen of the
#                   same profile, built from loadgen/ if needed)
#   SERVER_CORE     core for the server(s)  (default 0)
#   LOADGEN_CORE    core for the load generator (default 1)
#   SOURCE_IPS      loopback source range for streams (default 127.0.0.2-127.0.0.20)
#   BENCH_OUT       directory for JSON lines and logs (default: bench/out/<scenario>-<time>)
#   NO_PIN=1        do not pin with taskset
# Every process started here is killed on exit.

set -euo pipefail
bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NOTIFY_JWT_SECRET=${NOTIFY_JWT_SECRET:-bench-secret-0123456789abcdef}
SERVER_CORE=${SERVER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.2-127.0.0.20}
bench_tmp=$(mktemp -d "${TMPDIR:-/tmp}/campusbite-bench.XXXXXX")
BENCH_OUT=${BENCH_OUT:-$bench_root/bench/out/$(basename "$0")-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$BENCH_OUT"
bench_pids=()
bench_cluster_dir=""

bench_cleanup() {
  local pid
  for pid in "${bench_pids[@]:-}"; do
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  if [ -n "$bench_cluster_dir" ] && [ -e "$bench_cluster_dir/pids" ]; then
    CLUSTER_DIR=$bench_cluster_dir "$bench_root/cluster/down" >/dev/null 2>&1 || true
  fi
  wait 2>/dev/null || true
  rm -rf "$bench_tmp"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Streams need file descriptors: raise the soft limit to the hard one (20000 here).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "[$(date +%T)] $*" >&2; }

# pin_to CORE: sets PIN to the command prefix that pins to CORE (empty with NO_PIN=1).
# Used as `"${PIN[@]}" cmd &` so that $! is cmd itself (taskset and env exec).
pin_to() {
  if [ "${NO_PIN:-0}" = 1 ]; then PIN=(); else PIN=(taskset -c "$1"); fi
}

bench_binary() {
  local profile=${BENCH_PROFILE:-release} flag=--release
  [ "$profile" = debug ] && flag=
  if [ -n "${NOTIFY_BIN:-}" ]; then
    BIN=$NOTIFY_BIN
  elif [ "$profile" = debug ]; then
    (cd "$bench_root" && cargo build --quiet -p campusbite-notify --bin campusbite-notify) >&2
    BIN=$bench_root/target/debug/campusbite-notify
  else
    (cd "$bench_root" && cargo build --quiet --release -p campusbite-notify --bin campusbite-notify) >&2 ||
      { [ -x "$bench_root/target/release/campusbite-notify" ] &&
        log "warning: release build failed; using the existing binary"; }
    BIN=$bench_root/target/release/campusbite-notify
  fi
  [ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }
  # The load generator is its own crate (loadgen/), built from this tree
  # whatever server binary is measured.
  if [ -z "${LOADGEN_BIN:-}" ]; then
    (cd "$bench_root" && cargo build --quiet $flag -p campusbite-loadgen --bin campusbite-loadgen) >&2 ||
      { [ -x "$bench_root/target/$profile/campusbite-loadgen" ] &&
        log "warning: load generator build failed; using the existing binary"; }
    LOADGEN_BIN=$bench_root/target/$profile/campusbite-loadgen
  fi
  [ -x "$LOADGEN_BIN" ] || { echo "no load generator at $LOADGEN_BIN" >&2; exit 2; }
  export BIN LOADGEN_BIN
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME [ENV=VALUE...]: single node, embedded bus, pinned to SERVER_CORE.
# Sets SERVER_PID and SERVER_URL.
start_server() {
  local name=$1
  shift
  launch_server "$name" env NOTIFY_LISTEN=127.0.0.1:0 RUST_LOG=${SERVER_RUST_LOG:-warn} "$@" "$BIN" serve
}

# launch_server NAME CMD...: runs CMD (a server that prints `listening on
# <addr>`) pinned to SERVER_CORE, output in $BENCH_OUT/NAME.out and .log,
# and waits for its address. Sets SERVER_PID and SERVER_URL.
launch_server() {
  local name=$1
  shift
  # taskset and env exec, so $! is the server itself.
  pin_to "$SERVER_CORE"
  "${PIN[@]}" "$@" >"$BENCH_OUT/$name.out" 2>"$BENCH_OUT/$name.log" &
  SERVER_PID=$!
  disown "$SERVER_PID" 2>/dev/null || true
  bench_pids+=("$SERVER_PID")
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$BENCH_OUT/$name.out" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "server did not start; see $BENCH_OUT/$name.log" >&2; exit 2; }
  SERVER_URL=http://$addr
  log "$name: pid $SERVER_PID at $SERVER_URL"
}

# stop_pid PID: SIGTERM, then SIGKILL after 3 s (the gateway drains for
# NOTIFY_SHUTDOWN_GRACE; a benchmark does not need to wait for it).
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# start_nchan NAME: nginx + nchan in its own prefix, one worker, pinned to SERVER_CORE.
# Sets SERVER_PID (master), NCHAN_WORKER, SERVER_URL.
start_nchan() {
  local name=$1 dir=$bench_tmp/$1 port
  port=$(free_port)
  mkdir -p "$dir/tmp"
  local module=/usr/lib/nginx/modules/ngx_nchan_module.so
  [ -e "$module" ] || { echo "nchan is not installed (bench/compare-nchan installs it)" >&2; exit 2; }
  cat >"$dir/nginx.conf" <<EOF
load_module $module;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  # Publishers keep their connections (the load generator's pool does).
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  # The same job as the gateway: a channel per user, 100 messages kept 24 h.
  nchan_message_buffer_length 100;
  nchan_message_timeout 24h;
  # Messages live in shared memory (default 128 MB); with 24 h retention a
  # benchmark's hundreds of thousands of messages fill it and nchan answers
  # 500. The gateway's history is bounded by bytes and evicts the oldest.
  nchan_shared_memory_size 2048M;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location ~ ^/sub/([^/]+)$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
    }
    location ~ ^/pub/([^/]+)$ {
      nchan_publisher http;
      nchan_channel_id \$1;
    }
  }
}
EOF
  pin_to "$SERVER_CORE"
  "${PIN[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$BENCH_OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  disown "$SERVER_PID" 2>/dev/null || true
  bench_pids+=("$SERVER_PID")
  NCHAN_WORKER=""
  for _ in $(seq 50); do
    NCHAN_WORKER=$(pgrep -P "$SERVER_PID" | head -1 || true)
    [ -n "$NCHAN_WORKER" ] && curl -s -o /dev/null "http://127.0.0.1:$port/pub/ping" -d x && break
    sleep 0.1
  done
  [ -n "$NCHAN_WORKER" ] || { echo "nginx did not start; see $dir/error.log" >&2; exit 2; }
  bench_pids+=("$NCHAN_WORKER")
  SERVER_URL=http://127.0.0.1:$port
  log "$name: nginx master $SERVER_PID worker $NCHAN_WORKER at $SERVER_URL"
}

# loadgen NAME ARGS...: runs the load generator pinned to LOADGEN_CORE, prints
# its JSON line and keeps it in $BENCH_OUT/NAME.json. Returns its exit code.
loadgen() {
  local name=$1 rc=0
  shift
  pin_to "$LOADGEN_CORE"
  "${PIN[@]}" "$LOADGEN_BIN" --label "$name" "$@" >"$BENCH_OUT/$name.json" \
    2>"$BENCH_OUT/$name.log" || rc=$?
  cat "$BENCH_OUT/$name.json"
  return $rc
}

# jget FILE EXPR: a value from a loadgen JSON line (python expression over `r`).
jget() {
  python3 - "$1" "$2" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    v = eval(sys.argv[2], {"r": r})
except Exception:
    v = None
print("" if v is None else v)
PY
}

# cpu_busy: percent of all cores busy over one second (what else runs here).
cpu_busy() {
  local a b
  a=$(head -1 /proc/stat)
  sleep 1
  b=$(head -1 /proc/stat)
  python3 - "$a" "$b" <<'PY'
import sys
a, b = ([int(x) for x in s.split()[1:]] for s in sys.argv[1:3])
d = [y - x for x, y in zip(a, b)]
idle = d[3] + d[4]
print(round(100 * (1 - idle / max(1, sum(d)))))
PY
}

# wait_quiet: with WAIT_QUIET=N, wait up to N seconds for the machine to be
# less than 15% busy (other engineers' builds share it).
wait_quiet() {
  local limit=${WAIT_QUIET:-0} waited=0 busy
  while [ "$waited" -lt "$limit" ]; do
    busy=$(cpu_busy)
    [ "$busy" -lt 15 ] && return 0
    waited=$((waited + 1))
  done
}

machine_line() {
  wait_quiet
  echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg); busy before start: $(cpu_busy)%"
}

# start_cluster NODES: cluster/up in a private dir; sets NODE_URLS (array),
# NODE_PIDS (array), NATS_URLS, exports NATS_USER/NATS_PASSWORD (producer); gateway nodes pinned to SERVER_CORE.
start_cluster() {
  bench_cluster_dir=$bench_tmp/cluster
  # One HTTP worker per node: the nodes are pinned after they start.
  CLUSTER_DIR=$bench_cluster_dir NOTIFY_BIN=$BIN RUST_LOG=${SERVER_RUST_LOG:-warn} \
    NOTIFY_WORKERS=${NOTIFY_WORKERS:-1} "$bench_root/cluster/up" "$1" >&2
  # shellcheck disable=SC1091
  source "$bench_cluster_dir/env"
  # NATS refuses anonymous clients: the load generator publishes as the
  # producer user (its --nats-user / --nats-password read these).
  export NATS_USER=$NATS_PRODUCER_USER NATS_PASSWORD=$NATS_PRODUCER_PASSWORD
  IFS=, read -r -a NODE_URLS <<<"$NOTIFY_NODE_URLS"
  NATS_URLS=$NOTIFY_NATS_URL
  mapfile -t NODE_PIDS < <(awk '$2=="node"{print $1}' "$bench_cluster_dir/pids")
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    [ "${NO_PIN:-0}" = 1 ] || taskset -a -cp "$SERVER_CORE" "$pid" >/dev/null
  done
}
