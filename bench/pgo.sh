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
# lib.sh works from the repository's root.
source bench/training.sh
TAG=pgo

TRAIN_SECONDS=${TRAIN_SECONDS:-6}
CONNS=${CONNS:-32}
PGO=$PWD/target/pgo
PROFILES=$PGO/profiles

need wrk wrk
need h2load nghttp2-client
need curl curl

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
[ -x "$profdata" ] || rustup component add llvm-tools
[ -x "$profdata" ] || train_fail "llvm-profdata not found at $profdata"

# --target keeps build scripts and proc macros (built for the host) out of
# the instrumentation and the optimization: only the gateway is profiled.
build() { # build RUSTFLAG TARGET_DIR
  RUSTFLAGS="${RUSTFLAGS:-} $1" cargo build --profile production --quiet \
    --target "$host" --target-dir "$2" --bin portico
}

echo "pgo: building the instrumented gateway (target/pgo/generate)" >&2
build "-Cprofile-generate=$PROFILES" "$PGO/generate"
rm -rf "$PROFILES"
mkdir -p "$PROFILES"

train "$PGO/generate/$host/production/portico"
ls "$PROFILES"/*.profraw >/dev/null 2>&1 || train_fail "the gateway wrote no profile"
"$profdata" merge -o "$PGO/portico.profdata" "$PROFILES"

echo "pgo: building the optimized gateway (target/pgo/use)" >&2
build "-Cprofile-use=$PGO/portico.profdata" "$PGO/use"
cp "$PGO/use/$host/production/portico" "$PGO/portico"
echo "pgo: built target/pgo/portico" >&2
