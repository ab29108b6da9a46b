#!/usr/bin/env bash
# Balancing benchmark: the cost of spreading calls over 1 vs 8 endpoints
# (should be flat), and what clients see when one of 8 endpoints is killed
# mid-load (failed requests, p99), in one run.
#
#   bench/balance.sh              # 10 s per row after 2 s of warm-up
#   DURATION=5 bench/balance.sh
#
# Layout (2+ cores): backends and load generator on CPU 0, Portico on CPU 1.
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
GATEWAY=127.0.0.1:18191

need wrk wrk
need h2load nghttp2-client
need taskset util-linux
release_build


backends=()
backend_pids=()
for i in $(seq 1 8); do
  addr="127.0.0.1:$((20190 + i))"  # below the ephemeral port range
  taskset -c "$LOAD_CPU" target/release/examples/demo_backend "$addr" >"$RUN/backend-$i.log" 2>&1 &
  pids+=($!); backend_pids+=($!); backends+=("$addr")
done
sleep 0.5

gw_pid=
start_portico() {
  local n=$1
  local list; list=$(printf '"%s", ' "${backends[@]:0:$n}")
  cat >"$RUN/balance.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = [${list%, }]
balance = "${BALANCE:-round_robin}"
${EXTRA:-}
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
TOML
  RUST_LOG=error taskset -c "$PROXY_CPU" "$PORTICO" serve --config "$RUN/balance.toml" >"$RUN/portico.log" 2>&1 &
  gw_pid=$!
  pids+=("$gw_pid")
  for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_portico() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; }


rows=()
base_rps=
grpc_row() {
  local label=$1
  local args=(-c "$CONNS" -m 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$RUN/getshelf.bin")
  local url="http://$GATEWAY/portico.demo.v1.Library/GetShelf"
  taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "$WARMUP" "$url" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$gw_pid")
  taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "$DURATION" --log-file "$RUN/h2load.log" "$url" >"$RUN/h2load.out" 2>&1
  local after; after=$(cpu_ticks "$gw_pid")
  local rps; rps=$(awk '/^finished in/ {print $4}' "$RUN/h2load.out" | tr -d ',')
  local reqs; reqs=$(awk '/^requests:/ {print $8}' "$RUN/h2load.out")
  read -r p50 p99 < <(percentiles "$RUN/h2load.log")
  local us; us=$(awk -v t=$((after - before)) -v hz="$tick_hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  [ -z "$base_rps" ] && base_rps=$rps
  local ratio; ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN {printf "%.2fx", a / b}')
  rows+=("| $label | ${rps%.*} | $p50 | $p99 | $ratio | $us |")
}

start_portico 1; grpc_row "gRPC GetShelf, 1 endpoint"; stop_portico
# The same 8 connections to one endpoint: separates the cost of more
# connections (smaller write batches) from the cost of picking endpoints.
EXTRA="max_streams_per_connection = 8
max_connections_per_endpoint = 8" start_portico 1; grpc_row "gRPC GetShelf, 1 endpoint over 8 connections"; stop_portico
start_portico 8; grpc_row "gRPC GetShelf, 8 endpoints"; stop_portico
BALANCE=least_request start_portico 8; grpc_row "gRPC GetShelf, 8 endpoints, least_request"; stop_portico

# One of 8 endpoints is killed a third of the way into a REST load; wrk
# counts the requests that failed and the latency over the whole run.
kill_rows=()
rest_run() {
  local label=$1 kill_one=$2
  start_portico 8
  taskset -c "$LOAD_CPU" wrk -t 1 -c "$CONNS" -d "$WARMUP" "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 || true
  taskset -c "$LOAD_CPU" wrk -t 1 -c "$CONNS" -d "$DURATION" --latency "http://$GATEWAY/v1/shelves/1" >"$RUN/wrk.out" 2>&1 &
  local wrk_pid=$!
  if [ "$kill_one" = yes ]; then sleep "$(awk -v d="$DURATION" 'BEGIN {print d / 3}')"; kill -9 "${backend_pids[7]}"; fi
  wait "$wrk_pid"
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk.out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$RUN/wrk.out")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$RUN/wrk.out"); non2xx=${non2xx:-0}
  local errors; errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$RUN/wrk.out"); errors=${errors:-0}
  local p50; p50=$(awk '$1=="50%" {print $2}' "$RUN/wrk.out" | to_ms)
  local p99; p99=$(awk '$1=="99%" {print $2}' "$RUN/wrk.out" | to_ms)
  kill_rows+=("| $label | ${rps%.*} | $reqs | $((non2xx + errors)) | $p50 | $p99 |")
  stop_portico
}
rest_run "REST GET /v1/shelves/1, 8 endpoints" no
rest_run "same, one endpoint SIGKILLed at $(awk -v d="$DURATION" 'BEGIN {printf "%.1f", d / 3}')s" yes

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)"
echo "- ${DURATION}s measured after ${WARMUP}s warm-up, $CONNS connections; backends + load on CPU $LOAD_CPU, portico on CPU $PROXY_CPU"
echo
echo "| row | req/s | p50 ms | p99 ms | vs 1 endpoint | portico CPU us/req |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "| row | req/s | requests | failed | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${kill_rows[@]}"
