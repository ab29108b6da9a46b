#!/usr/bin/env bash
# Gateway memory per idle WebSocket call: opens COUNT server-streaming calls
# through Portico (each established end to end: its first message arrived,
# the next is ten minutes away), then reads Portico's resident memory against
# its baseline with no calls open. MODE=sessions measures connections alone.
#
#   bench/ws_idle.sh            # 10,000 calls
#   COUNT=2000 bench/ws_idle.sh
source "$(dirname "$0")/lib.sh"
COUNT=${COUNT:-10000}
BACKEND=127.0.0.1:50161
GATEWAY=127.0.0.1:18161
# Each side holds one socket per call; use whatever the hard limit allows.
ulimit -n "$(ulimit -Hn)"

release_build --example ws_idle

target/release/examples/demo_backend "$BACKEND" >"$RUN/idle-backend.log" 2>&1 &
pids+=($!)
cat >"$RUN/idle.toml" <<TOML
[server]
listen = "$GATEWAY"
[server.limits]
max_connections = 100000
max_connections_per_ip = 100000
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "demo"
TOML
RUST_LOG=warn "$PORTICO" serve --config "$RUN/idle.toml" >"$RUN/idle-portico.log" 2>&1 &
gw=$!
pids+=($gw)
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18161) 2>/dev/null && break; sleep 0.1; done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Warm the gateway up with a few calls so the baseline includes its pools.
echo | target/release/examples/ws_idle "$GATEWAY" 50 >/dev/null
sleep 1
base=$(rss_kib "$gw")
coproc IDLE { target/release/examples/ws_idle "$GATEWAY" "$COUNT" ${MODE:-}; }
read -r ready <&"${IDLE[0]}"
sleep 2
held=$(rss_kib "$gw")
echo "" >&"${IDLE[1]}"
wait "$IDLE_PID" || true

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr)"
echo "- $ready; Portico RSS $((base / 1024)) MiB before, $((held / 1024)) MiB with the calls open"
awk -v b="$base" -v h="$held" -v n="$COUNT" 'BEGIN {printf "- %.1f KiB per open WebSocket call (RSS growth / calls)\n", (h - b) / n}'
