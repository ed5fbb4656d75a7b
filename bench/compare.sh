#!/usr/bin/env bash
# Side-by-side benchmark: coop-echo, a tokio echo server and a bare epoll loop.
#
#   bench/compare.sh           # 5 interleaved runs, ~35 minutes; writes bench/RESULTS.md
#   bench/compare.sh --help    # this, and nothing else
#   bench/compare.sh --quick   # one short run, to see that everything works
#   bench/compare.sh --instructions [coop|tokio|floor|plain]...   # only instructions per echo
#                              (plain: coop's plain read/write_all echo, bench/plain-echo;
#                              measured only when named)
#   bench/compare.sh --threads-section [--quick]   # only the threads section (5 interleaved
#                              runs, ~15 minutes): coop-echo serve --threads 2, unpinned
#                              and --pin-threads, against --threads 1 (costs per echo,
#                              instructions too) and tokio-echo --workers 2; prints its
#                              table, leaves RESULTS.md as it is
#   bench/compare.sh --tls-section [--quick]   # only the TLS section (5 interleaved runs, a
#                              few minutes): coop-echo serve --tls-cert against itself
#                              without TLS; prints its table, leaves RESULTS.md as it is
#   bench/compare.sh --http-section [--quick]   # only the HTTP and WebSocket section (5
#                              interleaved runs, ~6 minutes): coop-echo serve --http against
#                              hyper on tokio (bench/hyper-echo): wrk on GET /echo, a
#                              WebSocket load at a fixed rate (bench/ws-load), memory per
#                              idle WebSocket and keep-alive connection; prints its tables,
#                              leaves RESULTS.md as it is
#
# Needs 2 cores (server on core 0, load generator on core 1; in the threads section's
# runs each process may use both, and only --pin-threads pins a serving thread to each),
# perf (system calls), valgrind (instructions), wrk (HTTP load) and a font for the chart;
# installs what is missing.
set -euo pipefail

# The header above, with bash's builtins alone: nothing is needed to read it.
usage() {
  local line
  while IFS= read -r line; do
    case "$line" in
      '#!'*) ;;
      '#'*) line=${line#\#}; printf '%s\n' "${line# }" ;;
      *) return 0 ;;
    esac
  done <"${BASH_SOURCE[0]}"
}
# Checked before anything is installed or built: a mistyped flag must not start the
# half-hour run. The same flags as bench/compare/src/main.rs reads.
wrong() { echo "compare.sh: $1" >&2; usage >&2; exit 2; }
instructions=false
for arg in "$@"; do [ "$arg" != --instructions ] || instructions=true; done
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --quick | --instructions | --threads-section | --tls-section | --http-section) ;;
    coop | tokio | floor | plain | --with-admin) "$instructions" || wrong "'$arg' goes after --instructions" ;;
    *) wrong "unknown argument '$arg'" ;;
  esac
done

cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v taskset >/dev/null || missing+=(util-linux)
command -v perf >/dev/null || missing+=(linux-perf)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --workspace --bins
# 10,000+ connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)"
exec taskset -c 1 target/release/compare "$@"
