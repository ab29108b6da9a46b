#!/usr/bin/env bash
# Fleet mode against Redis, in one run:
#  1. the cost of a global rate-limit decision (GCRA in Redis) against a
#     local one and against no limit: Portico CPU us/request and p50/p99
#     latency of GET /v1/shelves/1, with a limit far above the load, so
#     every call is decided and admitted (each variant twice, interleaved);
#  2. how many decisions per second one Redis answers on this machine
#     (redis-benchmark running the same script, 64 connections, 100,000
#     keys);
#  3. the throughput of three instances sharing a global limit against one
#     (all on the same two cores: the figure says what this machine does,
#     not what three machines would).
#
#   bench/fleet.sh                # 8 s per row after 2 s of warm-up
#
# Layout: Portico on CPU 1; the backend, redis-server and wrk on CPU 0.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
BACKEND=127.0.0.1:50161
REDIS_PORT=16391
need wrk wrk
need redis-server redis-server
need redis-benchmark redis-tools

release_build
taskset -c 0 target/release/examples/demo_backend "$BACKEND" >"$RUN/fleet-backend.log" 2>&1 &
pids+=($!)
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$RUN/fleet-redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

mkdir -p "$RUN/fleet"
# config NAME PORT ROUTE_EXTRA: a gateway config file.
config() {
  cat >"$RUN/fleet/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
$3
TOML
}
start() { # start NAME PORT CPU -> pid in $gw
  RUST_LOG=warn taskset -c "$3" "$PORTICO" serve --config "$RUN/fleet/$1.toml" >"$RUN/fleet-$1.log" 2>&1 &
  gw=$!
  pids+=($gw)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/v1/shelves/1" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}

rows=()
limit_row() {
  local name=$1 extra=$2
  config "$name" 18161 "$extra"
  start "$name" 18161 1
  local args=(-t 1 -c "$CONNS" --latency)
  taskset -c 0 wrk "${args[@]}" -d "$WARMUP" "http://127.0.0.1:18161/v1/shelves/1" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$gw")
  taskset -c 0 wrk "${args[@]}" -d "$DURATION" "http://127.0.0.1:18161/v1/shelves/1" >"$RUN/fleet-wrk.out" 2>&1
  local after; after=$(cpu_ticks "$gw")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/fleet-wrk.out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$RUN/fleet-wrk.out")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$RUN/fleet-wrk.out")
  local p50; p50=$(awk '$1 == "50%" {print $2}' "$RUN/fleet-wrk.out" | to_ms)
  local p99; p99=$(awk '$1 == "99%" {print $2}' "$RUN/fleet-wrk.out" | to_ms)
  local us; us=$(awk -v t=$((after - before)) -v hz="$tick_hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  [ -z "$base_us" ] && base_us=$us
  local ratio; ratio=$(awk -v a="$us" -v b="$base_us" 'BEGIN {printf "%.2fx", a / b}')
  rows+=("| $name | ${rps%.*} | $p50 | $p99 | $us | $ratio | ${non2xx:-0} |")
}
base_us=""
HIGH=1000000000
# Each variant twice, interleaved, so drift over the run (a warming
# backend, a noisy neighbour) shows as the spread of a row, not as a gap
# between rows.
for round in 1 2; do
  limit_row "no limit ($round)" ""
  limit_row "local limit ($round)" "rate_limit = { requests_per_second = $HIGH, key = \"client_ip\" }"
  limit_row "global limit, Redis ($round)" "rate_limit = { requests_per_second = $HIGH, key = \"client_ip\", scope = \"global\" }"
done

# 2. Decisions per second of one Redis: the gateway's own GCRA script.
script=$(awk '/^const GCRA: &str = r#"/ {on=1; next} /^"#;/ {on=0} on' src/fleet.rs)
taskset -c 0 redis-benchmark -p "$REDIS_PORT" -q -c 64 -n 300000 -r 100000 \
  eval "$script" 1 "portico:rl:{__rand_int__}" 1 1000000000 >"$RUN/fleet-rb.out" 2>&1 || true
decisions=$(tr '\r' '\n' <"$RUN/fleet-rb.out" | grep -o '[0-9.]* requests per second' | tail -1 | awk '{printf "%.0f", $1}')

# 3. Three instances sharing one global limit against one instance: wrk
#    splits its connections over the instances (one wrk per instance).
fleet_rps() { # fleet_rps N -> total req/s over N instances
  local n=$1 total=0 i
  local gws=()
  for i in $(seq "$n"); do
    config "fleet$i" $((18170 + i)) "rate_limit = { requests_per_second = $HIGH, key = \"route\", scope = \"global\" }"
    start "fleet$i" $((18170 + i)) 1
    gws+=("$gw")
  done
  local per=$((CONNS / n)) wrks=()
  for i in $(seq "$n"); do
    taskset -c 0 wrk -t 1 -c "$per" -d "$DURATION" "http://127.0.0.1:$((18170 + i))/v1/shelves/1" >"$RUN/fleet-wrk-$i.out" 2>&1 &
    wrks+=($!)
  done
  wait "${wrks[@]}"
  for i in $(seq "$n"); do
    total=$(awk -v t="$total" '/^Requests\/sec/ {printf "%.0f", t + $2}' "$RUN/fleet-wrk-$i.out")
  done
  for g in "${gws[@]}"; do kill "$g"; wait "$g" 2>/dev/null || true; done
  echo "$total"
}
one=$(fleet_rps 1)
three=$(fleet_rps 3)

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr); ${DURATION}s per row, $CONNS connections"
echo
echo "| GET /v1/shelves/1 | req/s | p50 ms | p99 ms | portico CPU us/req | vs no limit | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "- one Redis: ${decisions:-?} GCRA decisions/s (redis-benchmark, 64 connections, 100,000 keys)"
echo "- global limit, 1 instance: $one req/s; 3 instances (same 2 cores, gateways all on CPU 1): $three req/s ($(awk -v a="$three" -v b="$one" 'BEGIN {printf "%.2fx", a / b}'))"
