#!/usr/bin/env bash
# Cost of each policy on the hot path: the demo's GET /v1/shelves/1 through
# Portico with no policy, with JWT authentication (HS256, then RS256), an
# introspected opaque token answered from the cache, external authorization
# (Envoy's gRPC Check on every call, the same with cached decisions, HTTP
# forward-auth on every call), and served from the cache; the backend
# called directly over gRPC in the same run. Same layout as bench/load.sh
# (gateway on CPU 1; backend, identity services and load on CPU 0).
#
#   bench/policies.sh            # 8 s per row after 2 s of warm-up
#   ONLY='no policy|cache hit' bench/policies.sh   # only the rows whose name matches
#   PORTICO_BIN=/path/to/portico bench/policies.sh # another build, same harness
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
BACKEND=127.0.0.1:50181
GATEWAY=127.0.0.1:18181
for tool in wrk h2load openssl; do command -v $tool >/dev/null || { echo "missing $tool (bench/load.sh installs wrk and h2load)" >&2; exit 1; }; done

release_build --example authz_services
taskset -c 0 target/release/examples/demo_backend "$BACKEND" >"$RUN/pol-backend.log" 2>&1 &
pids+=($!)
# Introspection (every token active), ext_authz Check (allow all), forward-auth (200).
taskset -c 0 target/release/examples/authz_services 127.0.0.1:50190 127.0.0.1:50191 127.0.0.1:50192 >"$RUN/pol-authz.log" 2>&1 &
pids+=($!)

# Test keys and tokens, made here: HS256 with a secret, RS256 with a fresh key pair.
SECRET=bench-secret-of-some-length-for-hs256
openssl genrsa -out "$RUN/bench_rs.pem" 2048 2>/dev/null
openssl rsa -in "$RUN/bench_rs.pem" -pubout -out "$RUN/bench_rs.pub" 2>/dev/null
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
claims=$(printf '{"sub":"bench","exp":%d}' $(( $(date +%s) + 3600 )) | b64url)
hs_head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
rs_head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
HS_TOKEN="$hs_head.$claims.$(printf '%s' "$hs_head.$claims" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)"
RS_TOKEN="$rs_head.$claims.$(printf '%s' "$rs_head.$claims" | openssl dgst -sha256 -sign "$RUN/bench_rs.pem" -binary | b64url)"

taskset -c 0 h2load -c "$CONNS" -m 1 -D "$WARMUP" -H 'content-type: application/grpc' -d "$RUN/getshelf.bin" "http://$BACKEND/portico.demo.v1.Library/GetShelf" >/dev/null 2>&1 || true
taskset -c 0 h2load -c "$CONNS" -m 1 -D "$DURATION" -H 'content-type: application/grpc' -d "$RUN/getshelf.bin" "http://$BACKEND/portico.demo.v1.Library/GetShelf" >"$RUN/pol-h2load.out" 2>&1
direct=$(awk '/^finished in/ {print $4}' "$RUN/pol-h2load.out" | tr -d ',')

rows=("| direct (h2load gRPC GetShelf) | ${direct%.*} | | 1.00x |")
ONLY=${ONLY:-}
variant() {
  local name=$1 route_extra=$2 token=$3
  if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi
  cat >"$RUN/pol.toml" <<TOML
[server]
listen = "$GATEWAY"
[descriptors]
sets = ["$PWD/descriptors/demo.binpb"]
[authenticators.hs]
algorithm = "HS256"
secret = "$SECRET"
[authenticators.rs]
algorithm = "RS256"
public_key_file = "$PWD/$RUN/bench_rs.pub"
[authenticators.opaque]
kind = "introspection"
introspection_url = "http://127.0.0.1:50190/introspect"
client_id = "bench"
client_secret = "bench-secret"
[authenticators.keys]
kind = "api_key"
keys_file = "$PWD/tests/fixtures/api_keys.toml"
[ext_authz.check]
grpc = "127.0.0.1:50191"
[ext_authz.check_cached]
grpc = "127.0.0.1:50191"
cache_ttl = "5m"
[ext_authz.forward]
http = "http://127.0.0.1:50192/check"
[upstreams.demo]
endpoints = ["$BACKEND"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
$route_extra
TOML
  RUST_LOG=warn taskset -c 1 "$PORTICO" serve --config "$RUN/pol.toml" >"$RUN/pol-portico.log" 2>&1 &
  local gw=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/18181) 2>/dev/null && break; sleep 0.1; done
  local args=(-t 1 -c "$CONNS") header=""
  case "$token" in
    "") ;;
    key:*) header="x-api-key: ${token#key:}" ;;
    *) header="Authorization: Bearer $token" ;;
  esac
  [ -n "$header" ] && args+=(-H "$header")
  local smoke=(-sf)
  [ -n "$header" ] && smoke+=(-H "$header")
  curl "${smoke[@]}" "http://$GATEWAY/v1/shelves/1" | grep -q Fiction || { echo "$name: smoke request failed" >&2; kill $gw; exit 1; }
  taskset -c 0 wrk "${args[@]}" -d "$WARMUP" "http://$GATEWAY/v1/shelves/1" >/dev/null 2>&1 || true
  local before; before=$(awk '{print $14 + $15}' "/proc/$gw/stat")
  taskset -c 0 wrk "${args[@]}" -d "$DURATION" "http://$GATEWAY/v1/shelves/1" >"$RUN/pol-wrk.out" 2>&1
  local after; after=$(awk '{print $14 + $15}' "/proc/$gw/stat")
  kill $gw; wait $gw 2>/dev/null || true
  local rps; rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/pol-wrk.out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$RUN/pol-wrk.out")
  local us; us=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  local ratio; ratio=$(awk -v a="$rps" -v b="$direct" 'BEGIN {printf "%.2fx", a / b}')
  rows+=("| $name | ${rps%.*} | $us | $ratio |")
}
variant "portico, no policy" "" ""
variant "portico, JWT HS256" 'auth = "hs"' "$HS_TOKEN"
variant "portico, JWT RS256" 'auth = "rs"' "$RS_TOKEN"
variant "portico, introspected token (cache hit)" 'auth = "opaque"' "opaque-bench-token"
variant "portico, API key" 'auth = "keys"' "key:acme-key-123"
variant "portico, API key + ext_authz gRPC Check" $'auth = "keys"\next_authz = "check"' "key:acme-key-123"
variant "portico, API key + ext_authz (cached decision)" $'auth = "keys"\next_authz = "check_cached"' "key:acme-key-123"
variant "portico, forward-auth (HTTP)" 'ext_authz = "forward"' ""
variant "portico, cache hit" 'cache = { ttl = "5m" }' ""

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr); ${DURATION}s per row, $CONNS connections"
echo
echo "| GET /v1/shelves/1 | req/s | portico CPU us/req | vs direct |"
echo "|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
