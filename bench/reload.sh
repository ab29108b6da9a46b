#!/usr/bin/env bash
# Reload benchmark: JSON unary load through Portico without reloads, then
# with the config reloaded (SIGHUP, alternating two configs that add and
# remove a route and change a rate limit) every second, in one run, ROUNDS
# times each so the spread is visible.
#
#   bench/reload.sh                  # 10 s per row after 2 s of warm-up, 3 rounds
#   DURATION=5 ROUNDS=2 bench/reload.sh
#
# Layout as bench/load.sh: backend and load generator on CPU 0, Portico on
# CPU 1. Prints req/s, p50/p99, non-2xx and reloads done per row, and the
# ratio of each reloading row's p99 to the median p99 without reloads.
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND=127.0.0.1:50161
GATEWAY=127.0.0.1:18151
ADMIN=127.0.0.1:18152

need wrk wrk
need taskset util-linux

release_build

taskset -c "$LOAD_CPU" target/release/examples/demo_backend "$BACKEND" >"$RUN/backend.log" 2>&1 &
pids+=($!)

# Two configs: B adds the Probe route and a rate limit far above the load.
config() {
  cat <<TOML
[server]
listen = "$GATEWAY"
admin = "$ADMIN"
watch_files = false
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
TOML
  if [ "$1" = B ]; then
    printf 'rate_limit = { requests_per_second = 1000000 }\n[[routes]]\ngrpc_service = "portico.demo.v1.Probe"\nupstream = "demo"\n'
  fi
}
config A >"$RUN/reload.toml"
RUST_LOG=warn taskset -c "$PROXY_CPU" "$PORTICO" serve --config "$RUN/reload.toml" >"$RUN/portico.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q '"theme":"Fiction"' || { echo "gateway smoke request failed" >&2; exit 1; }

reloads() { curl -sf "http://$ADMIN/metrics" | awk '/^portico_config_reloads_total\{result="ok"\}/ {print $2}'; }
reload_errors() { curl -sf "http://$ADMIN/metrics" | awk '/^portico_config_reloads_total\{result="error"\}/ {print $2}'; }

# Reloads every second until killed, alternating the two configs.
reloader() {
  local shape=B
  while true; do
    sleep 1
    config "$shape" >"$RUN/reload.toml.new" && mv "$RUN/reload.toml.new" "$RUN/reload.toml"
    kill -HUP "$gw_pid"
    if [ "$shape" = B ]; then shape=A; else shape=B; fi
  done
}

rows=()
p99s_plain=()
row() {
  local label=$1 reloading=$2
  local url="http://$GATEWAY/v1/shelves/1"
  local args=(-t 1 -c "$CONNS" --latency)
  taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$WARMUP" "$url" >/dev/null 2>&1 || true
  local before; before=$(reloads)
  local rpid=
  # The reloading shell shares the load generator's core, not Portico's.
  if [ "$reloading" = yes ]; then reloader & rpid=$!; taskset -cp "$LOAD_CPU" "$rpid" >/dev/null; fi
  taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$DURATION" "$url" >"$RUN/wrk.out" 2>&1
  if [ -n "$rpid" ]; then kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null || true; fi
  local after; after=$(reloads)
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk.out")
  local p50; p50=$(awk '$1=="50%" {print $2}' "$RUN/wrk.out" | to_ms)
  local p99; p99=$(awk '$1=="99%" {print $2}' "$RUN/wrk.out" | to_ms)
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$RUN/wrk.out")
  local errs; errs=$(awk '/Socket errors/ {print $0}' "$RUN/wrk.out")
  [ "$reloading" = no ] && p99s_plain+=("$p99")
  rows+=("$label|${rps%.*}|$p50|$p99|${non2xx:-0}${errs:+ ($errs)}|$((after - before))")
}

for r in $(seq "$ROUNDS"); do
  row "round $r, no reloads" no
  row "round $r, reload every 1 s" yes
done
median_plain=$(printf '%s\n' "${p99s_plain[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)"
echo "- ${DURATION}s measured after ${WARMUP}s warm-up, $CONNS connections, GET /v1/shelves/1; backend + load on CPU $LOAD_CPU, portico on CPU $PROXY_CPU; failed reloads: $(reload_errors)"
echo
echo "| row | req/s | p50 ms | p99 ms | p99 vs median without reloads | non-2xx | reloads |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
  IFS='|' read -r label rps p50 p99 non2xx n <<<"$r"
  ratio=$(awk -v a="$p99" -v b="$median_plain" 'BEGIN {printf "%.2fx", a / b}')
  echo "| $label | $rps | $p50 | $p99 | $ratio | $non2xx | $n |"
done
