#!/usr/bin/env bash
# Load benchmark: the demo backend called directly over gRPC (h2load) versus
# the same calls through Portico as JSON (wrk), in one run.
#
#   bench/load.sh                 # 10 s per row after 2 s of warm-up
#   DURATION=5 CONNS=32 bench/load.sh
#   PORTICO_BIN=/path/to/other/portico bench/load.sh   # another build, same harness
#
# Layout (2+ cores): backend and load generator on CPU 0, Portico on CPU 1,
# as a gateway gets its own core in production. Prints a markdown table with
# req/s, p50/p99 latency, the ratio to the direct row, and Portico's CPU
# time per request (from /proc, the figure to compare gateways with).
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND=127.0.0.1:50151
GATEWAY=127.0.0.1:18141

need wrk wrk
need h2load nghttp2-client
need taskset util-linux

release_build

taskset -c "$LOAD_CPU" target/release/examples/demo_backend "$BACKEND" >"$RUN/backend.log" 2>&1 &
pids+=($!)
# The config gets a folder of its own: the gateway watches the config's
# folder for changes, and h2load writes a line per request into $RUN.
mkdir -p "$RUN/conf"
cat >"$RUN/conf/portico.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
TOML
RUST_LOG=warn taskset -c "$PROXY_CPU" "$PORTICO" serve --config "$RUN/conf/portico.toml" >"$RUN/portico.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q '"theme":"Fiction"' || { echo "gateway smoke request failed" >&2; exit 1; }

printf 'wrk.method = "POST"\nwrk.body = "{\\"shelf\\":\\"1\\"}"\nwrk.headers["Content-Type"] = "application/json"\n' >"$RUN/post.lua"


rows=()
# h2load with a gRPC frame; $3 is the target address, $4 the content type.
# Against the backend it sets the direct baseline; against Portico it also
# reads Portico's CPU time.
grpc_row() {
  local name=$1 path=$2 addr=$3 ct=$4 label=$5
  local args=(-c "$CONNS" -m 1 -H "content-type: $ct" -H 'te: trailers' -d "$RUN/getshelf.bin")
  taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "$WARMUP" "http://$addr$path" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$gw_pid")
  taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "$DURATION" --log-file "$RUN/h2load.log" "http://$addr$path" >"$RUN/h2load.out" 2>&1
  local after; after=$(cpu_ticks "$gw_pid")
  local rps; rps=$(awk '/^finished in/ {print $4}' "$RUN/h2load.out" | tr -d ',')
  local reqs; reqs=$(awk '/^requests:/ {print $8}' "$RUN/h2load.out")
  read -r p50 p99 < <(percentiles "$RUN/h2load.log")
  if [ "$addr" = "$BACKEND" ]; then
    direct_rps=$rps
    rows+=("| $name | $label | ${rps%.*} | $p50 | $p99 | 1.00x | |")
  else
    local us; us=$(awk -v t=$((after - before)) -v hz="$tick_hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    local ratio; ratio=$(awk -v a="$rps" -v b="$direct_rps" 'BEGIN {printf "%.2fx", a / b}')
    rows+=("| $name | $label | ${rps%.*} | $p50 | $p99 | $ratio | $us |")
  fi
}
through() {
  local name=$1 url=$2 script=${3:-}
  local args=(-t 1 -c "$CONNS" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$WARMUP" "$url" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$gw_pid")
  taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$DURATION" "$url" >"$RUN/wrk.out" 2>&1
  local after; after=$(cpu_ticks "$gw_pid")
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk.out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$RUN/wrk.out")
  local p50; p50=$(awk '$1=="50%" {print $2}' "$RUN/wrk.out" | to_ms)
  local p99; p99=$(awk '$1=="99%" {print $2}' "$RUN/wrk.out" | to_ms)
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$RUN/wrk.out")
  local us; us=$(awk -v t=$((after - before)) -v hz="$tick_hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  local ratio; ratio=$(awk -v a="$rps" -v b="$direct_rps" 'BEGIN {printf "%.2fx", a / b}')
  rows+=("| $name | portico (wrk JSON) | ${rps%.*} | $p50 | $p99 | $ratio | $us${non2xx:+ ($non2xx non-2xx!)} |")
}

grpc_row "unary GetShelf" /portico.demo.v1.Library/GetShelf "$BACKEND" application/grpc "direct (h2load gRPC)"
grpc_row "unary GetShelf" /portico.demo.v1.Library/GetShelf "$GATEWAY" application/grpc "portico (h2load gRPC)"
grpc_row "unary GetShelf" /portico.demo.v1.Library/GetShelf "$GATEWAY" application/grpc-web+proto "portico (h2load gRPC-Web)"
through "unary GetShelf, GET /v1/shelves/1" "http://$GATEWAY/v1/shelves/1"
through "unary GetShelf, POST JSON" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" "$RUN/post.lua"

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)"
echo "- ${DURATION}s measured after ${WARMUP}s warm-up, $CONNS connections; backend + load on CPU $LOAD_CPU, portico on CPU $PROXY_CPU"
echo
echo "| call | path | req/s | p50 ms | p99 ms | vs direct | portico CPU us/req |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
