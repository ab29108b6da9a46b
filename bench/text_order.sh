#!/usr/bin/env bash
# Writes link/text-order.txt: the functions a running gateway executes,
# hottest first, which optimized builds place side by side at the front of
# the binary's code (build.rs). Run it again after a change of compiler or
# dependency versions (their symbols' names change with them) or of the hot
# path; a stale list still builds, it only packs less.
#
#   bench/text_order.sh            # then: cargo build --profile production
#   TRAIN_SECONDS=10 bench/text_order.sh
#   bench/text_order.sh --check    # how many listed functions the production
#                                  # build has; fails below 90 %
#
# The production build runs under valgrind's callgrind, which records every
# function executed, from start-up to the drain at SIGTERM, through the
# training load of bench/training.sh (every protocol, the access log on,
# tracing at sampler 0) at a few connections: valgrind runs the gateway
# some 50 times slower, so six seconds per row reach every path that
# minutes would. Needs valgrind, wrk, h2load and curl; about 10 minutes.
source "$(dirname "$0")/lib.sh"
# lib.sh works from the repository's root.

case "${1:-}" in
  "" | --check) ;;
  *) echo "usage: bench/text_order.sh [--check]" >&2; exit 2 ;;
esac
if [ "${1:-}" = --check ]; then
  bin=${PORTICO_BIN:-target/production/portico}
  [ -x "$bin" ] || { echo "no $bin: cargo build --profile production first" >&2; exit 1; }
  need nm binutils
  total=$(wc -l <link/text-order.txt)
  found=$(nm "$bin" | awk '{print $NF}' | LC_ALL=C sort -u |
    LC_ALL=C comm -12 - <(LC_ALL=C sort -u link/text-order.txt) | wc -l)
  echo "$found of $total listed functions are in $bin"
  if [ "$total" -eq 0 ] || [ $((found * 100)) -lt $((total * 90)) ]; then
    echo "the list is stale (a dependency or the compiler changed?): run bench/text_order.sh" >&2
    exit 1
  fi
  exit 0
fi
source bench/training.sh

TRAIN_SECONDS=${TRAIN_SECONDS:-6}
CONNS=${CONNS:-4}
TAG=text-order

need valgrind valgrind
need wrk wrk
need h2load nghttp2-client
need curl curl

echo "$TAG: building the production gateway" >&2
cargo build --profile production --quiet --bin portico
out=$RUN/$TAG.callgrind
rm -f "$out"
train valgrind --tool=callgrind --dump-instr=no --demangle=no --compress-strings=no \
  --compress-pos=no --callgrind-out-file="$out" target/production/portico
[ -s "$out" ] || train_fail "callgrind wrote nothing; see $RUN/$TAG-portico.log"

# Each function's own instructions (a call's line carries the callee's
# inclusive cost and is skipped); only the gateway's binary, not libc, and
# only names a linker knows (not callgrind's "(below main)" or bare addresses).
list=$RUN/$TAG.txt
awk '
  /^ob=/ { ob = substr($0, 4); next }
  /^fn=/ { fn = substr($0, 4); sub(/'"'"'[0-9]+$/, "", fn)
           mine = (ob ~ /\/portico$/) && fn !~ /^0x/ && fn !~ /[ (]/
           if (mine && !(fn in self)) self[fn] = 0; next }
  /^calls=/ { call = 1; next }
  /^[0-9+-]/ { if (call) { call = 0; next } if (mine) self[fn] += $2; next }
  END { for (f in self) print self[f], f }
' "$out" | LC_ALL=C sort -k1,1nr -k2 | sed 's/^[0-9]* //' >"$list"
n=$(wc -l <"$list")
[ "$n" -gt 1000 ] || train_fail "only $n functions recorded; see $RUN/$TAG-portico.log"
mv "$list" link/text-order.txt
echo "$TAG: wrote link/text-order.txt ($n functions); rebuild to apply it" >&2
