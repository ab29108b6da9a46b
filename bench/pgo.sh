#!/usr/bin/env bash
# Builds Portico with profile-guided optimization (PGO): an instrumented
# build serves a training load, and the production build is then compiled
# with the counts it recorded, so the compiler inlines and lays out code
# for the paths the load ran.
#
#   bench/pgo.sh                       # -> target/pgo/portico
#   TRAIN_SECONDS=10 bench/pgo.sh      # a longer training load per row
#
# Needs llvm-profdata from the Rust toolchain (`rustup component add
# llvm-tools`, done here when missing), and wrk, h2load and curl (wrk and
# h2load as bench/load.sh installs them). Takes two production builds:
# about 20 minutes on 2 cores. The builds go to target/pgo/, so the plain
# production build in target/production/ stays as it is. The script sets
# RUSTFLAGS for both builds, so `rustflags` from a Cargo config file are
# not applied to them.
#
# The training load, against the demo backend, with the access log on and
# tracing at sampler 0: JSON GET and POST (REST, the direct and the general
# JSON paths), Connect JSON and protobuf, gRPC and gRPC-Web unary calls,
# and WebSocket server streams and chats. Each is checked to succeed, so
# the profile is of calls that work, not of errors. What it does not run
# (MCP, the authentication and other policies, the cache, TLS) is compiled
# as cold code: it works the same, and is what a longer training would add.
source "$(dirname "$0")/lib.sh"

TRAIN_SECONDS=${TRAIN_SECONDS:-6}
CONNS=${CONNS:-32}
BACKEND=127.0.0.1:50171
GATEWAY=127.0.0.1:18171
PGO=$PWD/target/pgo
PROFILES=$PGO/profiles

need wrk wrk
need h2load nghttp2-client
need curl curl

fail() { echo "pgo: $*" >&2; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
[ -x "$profdata" ] || rustup component add llvm-tools
[ -x "$profdata" ] || fail "llvm-profdata not found at $profdata"

# --target keeps build scripts and proc macros (built for the host) out of
# the instrumentation and the optimization: only the gateway is profiled.
build() { # build RUSTFLAG TARGET_DIR
  RUSTFLAGS="${RUSTFLAGS:-} $1" cargo build --profile production --quiet \
    --target "$host" --target-dir "$2" --bin portico
}

echo "pgo: building the instrumented gateway (target/pgo/generate)" >&2
build "-Cprofile-generate=$PROFILES" "$PGO/generate"
cargo build --release --quiet --example demo_backend --example ws_client
rm -rf "$PROFILES"
mkdir -p "$PROFILES"

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
[access_log]
path = "$PWD/$RUN/pgo-access.log"
[tracing]
endpoint = "http://127.0.0.1:9"
sampler = "parentbased_traceidratio"
sampler_arg = 0
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
RUST_LOG=warn "$PGO/generate/$host/production/portico" serve --config "$RUN/pgo-conf/portico.toml" \
  >"$RUN/pgo-portico.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
for _ in $(seq 100); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q '"theme":"Fiction"' ||
  fail "the instrumented gateway did not answer; see $RUN/pgo-portico.log"

printf '\x0a\x01\x31' >"$RUN/pgo-getshelf.pb"
search='{"query":"dune","authors":["Herbert"],"in_print":true}'
# One call of each kind first: the profile should be of calls that work.
grpc_ok() { # grpc_ok CONTENT_TYPE BODY_FILE: the reply's status is OK
  curl -s --http2-prior-knowledge -i -H "content-type: $1" -H 'te: trailers' \
    --data-binary "@$2" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -aqi 'grpc-status: *0'
}
curl -sf "http://$GATEWAY/v1/shelves/1/books/1" | grep -q '"title"' || fail "REST GET of a book failed"
curl -sf -H 'content-type: application/json' -d "$search" "http://$GATEWAY/v1/books:search" | grep -q received ||
  fail "REST POST failed"
curl -sf -H 'content-type: application/json' -d '{"shelf":"1"}' \
  "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -q Fiction || fail "Connect JSON failed"
curl -sf --http2-prior-knowledge -H 'content-type: application/proto' -H 'connect-protocol-version: 1' \
  --data-binary "@$RUN/pgo-getshelf.pb" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -aq Fiction ||
  fail "Connect protobuf failed"
grpc_ok application/grpc "$RUN/getshelf.bin" || fail "gRPC failed"
grpc_ok application/grpc-web+proto "$RUN/getshelf.bin" || fail "gRPC-Web failed"

post() { # post FILE CONTENT_TYPE BODY
  printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "%s"\n' "$3" "$2" >"$1"
}
post "$RUN/pgo-connect.lua" application/json '{"shelf":"1"}'
post "$RUN/pgo-search.lua" application/json "$search"
wrk_row() { # wrk_row LABEL wrk-args...: every reply a 2xx
  echo "pgo: training: $1" >&2
  shift
  wrk -t1 -c "$CONNS" -d "$TRAIN_SECONDS" "$@" >"$RUN/pgo-wrk.out" 2>&1 || fail "wrk failed: $(cat "$RUN/pgo-wrk.out")"
  ! grep -q 'Non-2xx\|Socket errors' "$RUN/pgo-wrk.out" || fail "errors during training: $(cat "$RUN/pgo-wrk.out")"
}
h2_row() { # h2_row LABEL CONTENT_TYPE BODY_FILE [header...]: no request failed
  echo "pgo: training: $1" >&2
  local ct=$2 body=$3
  shift 3
  local args=(-c "$CONNS" -m 4 -D "$TRAIN_SECONDS" -H "content-type: $ct" -H 'te: trailers' -d "$body")
  for h in "$@"; do args+=(-H "$h"); done
  h2load "${args[@]}" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" >"$RUN/pgo-h2load.out" 2>&1 ||
    fail "h2load failed: $(cat "$RUN/pgo-h2load.out")"
  grep -q ' 0 failed, 0 errored' "$RUN/pgo-h2load.out" || fail "errors during training: $(cat "$RUN/pgo-h2load.out")"
}

wrk_row "REST GET (direct JSON reply)" "http://$GATEWAY/v1/shelves/1"
wrk_row "REST GET (reply with a Timestamp and a map)" "http://$GATEWAY/v1/shelves/1/books/1"
wrk_row "REST POST body \"*\"" -s "$RUN/pgo-search.lua" "http://$GATEWAY/v1/books:search"
wrk_row "Connect JSON" -s "$RUN/pgo-connect.lua" "http://$GATEWAY/portico.demo.v1.Library/GetShelf"
h2_row "gRPC" application/grpc "$RUN/getshelf.bin"
h2_row "gRPC-Web" application/grpc-web+proto "$RUN/getshelf.bin"
h2_row "Connect protobuf" application/proto "$RUN/pgo-getshelf.pb" 'connect-protocol-version: 1'

echo "pgo: training: WebSocket server streams and chats" >&2
feeds() { # one client after another until the time is up (a feed ends at 100,000 events)
  local end=$((SECONDS + TRAIN_SECONDS))
  while [ "$SECONDS" -lt "$end" ]; do
    timeout $((end - SECONDS + 1)) target/release/examples/ws_client \
      "ws://$GATEWAY/v1/feed?count=100000&interval_ms=0" </dev/null | grep -c '"result":{"seq"' || true
  done
}
ws=()
for i in 1 2 3 4; do
  feeds >"$RUN/pgo-feed-$i.out" 2>&1 &
  ws+=($!)
  { timeout "$TRAIN_SECONDS" target/release/examples/ws_client "ws://$GATEWAY/v1/chat?method=POST" \
    < <(yes '{"user":"ada","text":"hello there"}') | grep -c '"result":{"user":"ada"' || true; } >"$RUN/pgo-chat-$i.out" 2>&1 &
  ws+=($!)
done
wait "${ws[@]}" || true
# Each file holds the count of replies each client got.
for f in "$RUN"/pgo-feed-?.out "$RUN"/pgo-chat-?.out; do
  [ "$(awk '{n += $1} END {print n + 0}' "$f")" -gt 0 ] || fail "a WebSocket client got no replies ($f)"
done

# The counts are written when the process exits, so it is stopped the way
# an operator stops it, and waited for.
kill -0 "$gw_pid" 2>/dev/null || fail "the gateway died during training; see $RUN/pgo-portico.log"
kill -TERM "$gw_pid"
wait "$gw_pid" || true
ls "$PROFILES"/*.profraw >/dev/null 2>&1 || fail "the gateway wrote no profile"
"$profdata" merge -o "$PGO/portico.profdata" "$PROFILES"

echo "pgo: building the optimized gateway (target/pgo/use)" >&2
build "-Cprofile-use=$PGO/portico.profdata" "$PGO/use"
cp "$PGO/use/$host/production/portico" "$PGO/portico"
echo "pgo: built target/pgo/portico" >&2
