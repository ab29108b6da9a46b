# Shared by the bench scripts: run from the repository root, the run folder,
# the load tools, release builds, process cleanup and the figure helpers.
# Source it; it does not run anything by itself beyond setup.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=target/bench-run
mkdir -p "$RUN"

# need TOOL PACKAGE: installs the Debian package when running as root.
need() {
  if ! command -v "$1" >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    else
      echo "missing $1: install the $2 package" >&2; exit 1
    fi
  fi
}

# release_build [extra cargo args...]: the gateway and the demo backend.
release_build() { cargo build --release --quiet --bin portico --example demo_backend "$@"; }

# The gateway binary: PORTICO_BIN (say, an older build to compare with), or
# this checkout's release build.
PORTICO=${PORTICO_BIN:-target/release/portico}

# Every process started in background is recorded here and killed on exit.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# CPU time (user + system, in clock ticks) of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_hz=$(getconf CLK_TCK)

# h2load prints no percentiles; its per-request log has the latency (us) in column 3.
percentiles() { sort -n -k3 "$1" | awk '{a[NR]=$3} END {printf "%.2f %.2f\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'; }

# wrk prints latencies with a unit (850.00us, 1.31ms, 1.02s).
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f\n", v}'; }

# GetShelfRequest{shelf:"1"} as a gRPC frame: 0x00, 4-byte length, message.
printf '\x00\x00\x00\x00\x03\x0a\x01\x31' >"$RUN/getshelf.bin"
