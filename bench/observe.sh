#!/usr/bin/env bash
# What tracing and the access log cost: the same GET /v1/shelves/1 load
# (wrk, JSON) through Portico with tracing off, with a collector set and
# the sampler at 0, 1 % and 100 %, with the JSON access log to a file, and
# with both (sampler 0 and the access log), in one run. The collector is
# examples/otlp_sink (OTLP/gRPC, counts and drops spans).
#
#   bench/observe.sh                          # 8 s per row after 2 s of warm-up
#   REPEAT=3 bench/observe.sh                 # every row 3 times, rows alternated;
#                                             # medians and ranges
#   ONLY='off|sampler 0' bench/observe.sh     # only the rows whose name matches
#   PORTICO_BIN=/path/to/portico bench/observe.sh
#
# Layout as bench/load.sh: backend, collector and load on CPU 0, Portico on
# CPU 1. Prints req/s, p99 and Portico CPU microseconds per request, and
# each row's CPU against the "tracing off" row.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
BACKEND=127.0.0.1:50161
COLLECTOR=127.0.0.1:50162
GATEWAY=127.0.0.1:18161
need wrk wrk
need taskset util-linux
release_build --example otlp_sink
taskset -c 0 target/release/examples/demo_backend "$BACKEND" >"$RUN/obs-backend.log" 2>&1 &
pids+=($!)
taskset -c 0 target/release/examples/otlp_sink "$COLLECTOR" >"$RUN/obs-sink.log" 2>&1 &
pids+=($!)
mkdir -p "$RUN/obs"
REPEAT=${REPEAT:-1}
ONLY=${ONLY:-}
names=()
declare -A cpu_by rps_by p99_by lines_by
variant() {
  local name=$1 sections=$2
  if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi
  [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
  rm -f "$RUN/obs-logs/access.log"
  cat >"$RUN/obs/portico.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
$sections
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
TOML
  RUST_LOG=warn taskset -c 1 "$PORTICO" serve --config "$RUN/obs/portico.toml" >"$RUN/obs-portico.log" 2>&1 &
  local gw=$!
  for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q Fiction || { echo "$name: smoke request failed" >&2; kill $gw; exit 1; }
  taskset -c 0 wrk -t 1 -c "$CONNS" -d "$WARMUP" "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks "$gw")
  taskset -c 0 wrk -t 1 -c "$CONNS" --latency -d "$DURATION" "http://$GATEWAY/v1/shelves/1" >"$RUN/obs-wrk.out" 2>&1
  local after; after=$(cpu_ticks "$gw")
  kill $gw; wait $gw 2>/dev/null || true
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/obs-wrk.out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$RUN/obs-wrk.out")
  local p99; p99=$(awk '$1=="99%" {print $2}' "$RUN/obs-wrk.out" | to_ms)
  local us; us=$(awk -v t=$((after - before)) -v hz="$tick_hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  cpu_by[$name]+="$us "
  rps_by[$name]+="${rps%.*} "
  p99_by[$name]+="$p99 "
  if [ -f "$RUN/obs-logs/access.log" ]; then
    local n; n=$(wc -l <"$RUN/obs-logs/access.log")
    # Every request of the run (warm-up included) made its line.
    [ "$n" -ge "$reqs" ] || { echo "$name: $n lines for $reqs requests" >&2; exit 1; }
    lines_by[$name]="yes"
  fi
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
tracing() { printf '[tracing]\nendpoint = "http://%s"\nprotocol = "grpc"\nsampler = "parentbased_traceidratio"\nsampler_arg = %s\n' "$COLLECTOR" "$1"; }
access_log() { mkdir -p "$RUN/obs-logs"; printf '[access_log]\npath = "%s"\n' "$PWD/$RUN/obs-logs/access.log"; }
for _ in $(seq "$REPEAT"); do
  variant "tracing off" ""
  variant "sampler 0" "$(tracing 0)"
  variant "sampler 1 %" "$(tracing 0.01)"
  variant "sampler 100 %" "$(tracing 1.0)"
  variant "JSON access log to a file" "$(access_log)"
  variant "sampler 0 + access log" "$(tracing 0)
$(access_log)"
done

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr); ${DURATION}s per row after ${WARMUP}s warm-up, $CONNS connections, $REPEAT run(s) per row, rows alternated"
echo
echo "| GET /v1/shelves/1 | req/s (median) | p99 ms (median) | portico CPU us/req: median (range) | CPU vs the first row |"
echo "|---|---:|---:|---:|---:|"
base=""
for name in "${names[@]}"; do
  m=$(echo "${cpu_by[$name]}" | median)
  [ -z "$base" ] && base=$m
  vs=$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')
  echo "| $name${lines_by[$name]:+ (a line per request)} | $(echo "${rps_by[$name]}" | median) | $(echo "${p99_by[$name]}" | median) | $m ($(echo "${cpu_by[$name]}" | range)) | $vs |"
done
