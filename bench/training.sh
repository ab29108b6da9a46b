# shellcheck shell=bash
# Shared by bench/pgo.sh and bench/text_order.sh: a training load through a
# gateway started by the caller's command (an instrumented build, or a build
# under valgrind), against the demo backend, on every protocol: REST GET and
# POST, Connect JSON and protobuf, gRPC, gRPC-Web, WebSocket server streams
# and chats, with the access log on and tracing at sampler 0. Each kind is
# checked to succeed first, so what is recorded is of calls that work.
# Source it after lib.sh; set TRAIN_SECONDS, CONNS and TAG first.
#
#   train GATEWAY-COMMAND...   start the backend and the gateway, run the
#                              load, and stop the gateway with SIGTERM (the
#                              way an operator stops it), waiting for it
BACKEND=127.0.0.1:50171
GATEWAY=127.0.0.1:18171
# How long a gateway may take to answer its first call: under valgrind, seconds.
START_SECONDS=${START_SECONDS:-30}

train_fail() { echo "$TAG: $*" >&2; exit 1; }

train() {
  cargo build --release --quiet --example demo_backend --example ws_client
  target/release/examples/demo_backend "$BACKEND" >"$RUN/$TAG-backend.log" 2>&1 &
  pids+=($!)
  mkdir -p "$RUN/$TAG-conf"
  cat >"$RUN/$TAG-conf/portico.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["$BACKEND"]
[access_log]
path = "$PWD/$RUN/$TAG-access.log"
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
  RUST_LOG=warn "$@" serve --config "$RUN/$TAG-conf/portico.toml" >"$RUN/$TAG-portico.log" 2>&1 &
  local gw_pid=$!
  pids+=($gw_pid)
  for _ in $(seq $((START_SECONDS * 10))); do curl -sf "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://$GATEWAY/v1/shelves/1" | grep -q '"theme":"Fiction"' ||
    train_fail "the gateway did not answer; see $RUN/$TAG-portico.log"

  printf '\x0a\x01\x31' >"$RUN/$TAG-getshelf.pb"
  local search='{"query":"dune","authors":["Herbert"],"in_print":true}'
  # One call of each kind first.
  grpc_ok() { # grpc_ok CONTENT_TYPE BODY_FILE: the reply's status is OK
    curl -s --http2-prior-knowledge -i -H "content-type: $1" -H 'te: trailers' \
      --data-binary "@$2" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -aqi 'grpc-status: *0'
  }
  curl -sf "http://$GATEWAY/v1/shelves/1/books/1" | grep -q '"title"' || train_fail "REST GET of a book failed"
  curl -sf -H 'content-type: application/json' -d "$search" "http://$GATEWAY/v1/books:search" | grep -q received ||
    train_fail "REST POST failed"
  curl -sf -H 'content-type: application/json' -d '{"shelf":"1"}' \
    "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -q Fiction || train_fail "Connect JSON failed"
  curl -sf --http2-prior-knowledge -H 'content-type: application/proto' -H 'connect-protocol-version: 1' \
    --data-binary "@$RUN/$TAG-getshelf.pb" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" | grep -aq Fiction ||
    train_fail "Connect protobuf failed"
  grpc_ok application/grpc "$RUN/getshelf.bin" || train_fail "gRPC failed"
  grpc_ok application/grpc-web+proto "$RUN/getshelf.bin" || train_fail "gRPC-Web failed"

  post() { # post FILE CONTENT_TYPE BODY
    printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "%s"\n' "$3" "$2" >"$1"
  }
  post "$RUN/$TAG-connect.lua" application/json '{"shelf":"1"}'
  post "$RUN/$TAG-search.lua" application/json "$search"
  wrk_row() { # wrk_row LABEL wrk-args...: every reply a 2xx
    echo "$TAG: training: $1" >&2
    shift
    wrk -t1 -c "$CONNS" -d "$TRAIN_SECONDS" "$@" >"$RUN/$TAG-wrk.out" 2>&1 || train_fail "wrk failed: $(cat "$RUN/$TAG-wrk.out")"
    ! grep -q 'Non-2xx\|Socket errors' "$RUN/$TAG-wrk.out" || train_fail "errors during training: $(cat "$RUN/$TAG-wrk.out")"
  }
  h2_row() { # h2_row LABEL CONTENT_TYPE BODY_FILE [header...]: no request failed
    echo "$TAG: training: $1" >&2
    local ct=$2 body=$3
    shift 3
    local args=(-c "$CONNS" -m 4 -D "$TRAIN_SECONDS" -H "content-type: $ct" -H 'te: trailers' -d "$body")
    for h in "$@"; do args+=(-H "$h"); done
    h2load "${args[@]}" "http://$GATEWAY/portico.demo.v1.Library/GetShelf" >"$RUN/$TAG-h2load.out" 2>&1 ||
      train_fail "h2load failed: $(cat "$RUN/$TAG-h2load.out")"
    grep -q ' 0 failed, 0 errored' "$RUN/$TAG-h2load.out" || train_fail "errors during training: $(cat "$RUN/$TAG-h2load.out")"
  }

  wrk_row "REST GET (direct JSON reply)" "http://$GATEWAY/v1/shelves/1"
  wrk_row "REST GET (reply with a Timestamp and a map)" "http://$GATEWAY/v1/shelves/1/books/1"
  wrk_row "REST POST body \"*\"" -s "$RUN/$TAG-search.lua" "http://$GATEWAY/v1/books:search"
  wrk_row "Connect JSON" -s "$RUN/$TAG-connect.lua" "http://$GATEWAY/portico.demo.v1.Library/GetShelf"
  h2_row "gRPC" application/grpc "$RUN/getshelf.bin"
  h2_row "gRPC-Web" application/grpc-web+proto "$RUN/getshelf.bin"
  h2_row "Connect protobuf" application/proto "$RUN/$TAG-getshelf.pb" 'connect-protocol-version: 1'

  echo "$TAG: training: WebSocket server streams and chats" >&2
  feeds() { # one client after another until the time is up (a feed ends at 100,000 events)
    local end=$((SECONDS + TRAIN_SECONDS))
    while [ "$SECONDS" -lt "$end" ]; do
      timeout $((end - SECONDS + 1)) target/release/examples/ws_client \
        "ws://$GATEWAY/v1/feed?count=100000&interval_ms=0" </dev/null | grep -c '"result":{"seq"' || true
    done
  }
  local ws=() i f
  for i in 1 2 3 4; do
    feeds >"$RUN/$TAG-feed-$i.out" 2>&1 &
    ws+=($!)
    { timeout "$TRAIN_SECONDS" target/release/examples/ws_client "ws://$GATEWAY/v1/chat?method=POST" \
      < <(yes '{"user":"ada","text":"hello there"}') | grep -c '"result":{"user":"ada"' || true; } >"$RUN/$TAG-chat-$i.out" 2>&1 &
    ws+=($!)
  done
  wait "${ws[@]}" || true
  # Each file holds the count of replies each client got.
  for f in "$RUN/$TAG"-feed-?.out "$RUN/$TAG"-chat-?.out; do
    [ "$(awk '{n += $1} END {print n + 0}' "$f")" -gt 0 ] || train_fail "a WebSocket client got no replies ($f)"
  done

  kill -0 "$gw_pid" 2>/dev/null || train_fail "the gateway died during training; see $RUN/$TAG-portico.log"
  kill -TERM "$gw_pid"
  wait "$gw_pid" || true
}
