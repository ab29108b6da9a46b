#!/usr/bin/env bash
# Builds Portico with profile-guided optimization (PGO): an instrumented
# build serves a training load through every client protocol, and the
# production build is then compiled with the counts it recorded, so the
# compiler lays out and inlines for the paths a gateway actually runs.
#
#   bench/pgo.sh                       # -> target/pgo/portico
#   TRAIN_SECONDS=10 bench/pgo.sh      # a longer training load per row
#
# Needs llvm-profdata from the Rust toolchain (`rustup component add
# llvm-tools`, done here when missing), and wrk, h2load and taskset (the
# same tools as bench/load.sh). Takes two production builds: about 15
# minutes on 2 cores. The builds go to target/pgo/, so the plain
# production build in target/production/ stays as it is.
#
# The training load: JSON GET and POST (REST, direct and general JSON
# paths), Connect JSON and protobuf, gRPC and gRPC-Web unary calls, and
# WebSocket server streams and chats, against the demo backend.
source "$(dirname "$0")/lib.sh"

TRAIN_SECONDS=${TRAIN_SECONDS:-6}
CONNS=${CONNS:-32}
BACKEND=127.0.0.1:50171
GATEWAY=127.0.0.1:18171
PGO=$PWD/target/pgo
PROFILES=$PGO/profiles

need wrk wrk
need h2load nghttp2-client
need taskset util-linux

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools
fi

echo "pgo: building the instrumented gateway (target/pgo/generate)" >&2
rm -rf "$PROFILES"
mkdir -p "$PROFILES"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES" \
  cargo build --profile production --quiet --target-dir "$PGO/generate" --bin portico
cargo build --release --quiet --example demo_backend --example ws_client

target/release/examples/demo_backend "$BACKEND" >"$RUN/pgo-backend.log" 2>&1 &
pids+=($!)
mkdir -p "$RUN/pgo-conf"
cat >"$RUN/pgo-conf/portico.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "demo"
[[routes]]
grpc_service = "portico.demo.v1.Chat"
upstream = "demo"
TOML
RUST_LOG=warn "$PGO/generate/production/portico" serve --config "$RUN/pgo-conf/portico.toml" \
  >"$RUN/pgo-portico.log" 2>&1 &
gw_pid=$!
for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q '"theme":"Fiction"' || {
  echo "pgo: the instrumented gateway did not answer; see $RUN/pgo-portico.log" >&2
  exit 1
}

post() { # post FILE CONTENT_TYPE BODY
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "%s"\n' "$3" "$2" >"$1"
}
post "$RUN/pgo-connect.lua" application/json '"{\"shelf\":\"1\"}"'
post "$RUN/pgo-search.lua" application/json '"{\"query\":\"dune\",\"authors\":[\"Herbert\"],\"in_print\":true}"'
wrk_row() { echo "pgo: training: $1" >&2; shift; wrk -t1 -c "$CONNS" -d "$TRAIN_SECONDS" "$@" >/dev/null; }
h2_row() { # h2_row LABEL PATH CONTENT_TYPE BODY_FILE [header...]
  echo "pgo: training: $1" >&2
  local path=$2 ct=$3 body=$4
  shift 4
  local extra=()
  for h in "$@"; do extra+=(-H "$h"); done
  h2load -c "$CONNS" -m 4 -D "$TRAIN_SECONDS" -H "content-type: $ct" -H 'te: trailers' \
    "${extra[@]}" -d "$body" "http://$GATEWAY$path" >/dev/null
}
printf '\x0a\x01\x31' >"$RUN/pgo-getshelf.pb"

wrk_row "REST GET (direct JSON reply)" "http://$GATEWAY/v1/shelves/1"
wrk_row "REST GET (reply with a Timestamp and a map)" "http://$GATEWAY/v1/shelves/1/books/1"
wrk_row "REST POST body \"*\"" -s "$RUN/pgo-search.lua" "http://$GATEWAY/v1/books:search"
wrk_row "Connect JSON" -s "$RUN/pgo-connect.lua" "http://$GATEWAY/portico.demo.v1.Library/GetShelf"
h2_row "gRPC" /portico.demo.v1.Library/GetShelf application/grpc "$RUN/getshelf.bin"
h2_row "gRPC-Web" /portico.demo.v1.Library/GetShelf application/grpc-web+proto "$RUN/getshelf.bin"
h2_row "Connect protobuf" /portico.demo.v1.Library/GetShelf application/proto "$RUN/pgo-getshelf.pb" \
  'connect-protocol-version: 1'

echo "pgo: training: WebSocket server streams and chats" >&2
ws=()
for _ in 1 2 3 4; do
  timeout "$TRAIN_SECONDS" target/release/examples/ws_client \
    "ws://$GATEWAY/v1/feed?count=100000000&interval_ms=0" </dev/null >/dev/null 2>&1 &
  ws+=($!)
  timeout "$TRAIN_SECONDS" target/release/examples/ws_client "ws://$GATEWAY/v1/chat?method=POST" \
    < <(yes '{"user":"ada","text":"hello there"}') >/dev/null 2>&1 &
  ws+=($!)
done
wait "${ws[@]}" || true

# The counts are written when the process exits, so it is stopped the way
# an operator stops it, and waited for.
kill -TERM "$gw_pid"
wait "$gw_pid" || true
ls "$PROFILES"/*.profraw >/dev/null 2>&1 || { echo "pgo: no profile was written" >&2; exit 1; }
"$profdata" merge -o "$PGO/portico.profdata" "$PROFILES"

echo "pgo: building the optimized gateway (target/pgo/use)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PGO/portico.profdata" \
  cargo build --profile production --quiet --target-dir "$PGO/use" --bin portico
cp "$PGO/use/production/portico" "$PGO/portico"
echo "pgo: built target/pgo/portico" >&2
