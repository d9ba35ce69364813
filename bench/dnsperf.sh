#!/usr/bin/env bash
# Cluster DNS throughput of `svcdns serve` on one core, with dnsperf on the other.
#
#   bench/dnsperf.sh [N_SERVICES=10000] [SECONDS=20] [extra serve flags...]
#
# Generates the data set (bench/dataset.py) when missing, starts svcdns pinned to CPU 0,
# waits for /ready (load time), runs dnsperf pinned to CPU 1 over UDP, then prints QPS,
# lost queries, latency, server CPU per answered query and RSS. Needs dnsperf and taskset
# (Debian: dnsperf, util-linux); installs dnsperf when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; SECS=${2:-20}; shift $(( $# > 2 ? 2 : $# )) || true
PY=${PY:-.venv/bin/python}
./scripts/need dnsperf:dnsperf taskset:util-linux
DATA=bench/out/$N
[ -f "$DATA/cluster.json" ] || "$PY" bench/dataset.py "$N"
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
PORT=${PORT:-$(free_port)}; HPORT=${HPORT:-$(free_port)}

start=$(date +%s.%N)
taskset -c 0 "$PY" -m svcdns --log-level warning serve --manifests "$DATA/cluster.json" \
  --listen 127.0.0.1:$PORT --health 127.0.0.1:$HPORT "$@" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$HPORT/ready" >/dev/null 2>&1; do
  kill -0 $PID 2>/dev/null || { echo "svcdns exited" >&2; exit 1; }
  sleep 0.05
done
ready=$(echo "$(date +%s.%N) - $start" | bc)
rss_ready=$(awk '/VmRSS/{print $2}' /proc/$PID/status)

cpu() { awk '{print $14 + $15}' /proc/$PID/stat; }   # utime+stime in clock ticks
HZ=$(getconf CLK_TCK)
c0=$(cpu)
out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$DATA/queries.txt" -l "$SECS" -c 8 -q 200 -t 2 2>&1)
c1=$(cpu)
completed=$(echo "$out" | awk '/Queries completed:/{print $3}')
lost=$(echo "$out" | awk '/Queries lost:/{print $3}')
qps=$(echo "$out" | awk '/Queries per second:/{print $4}')
lat=$(echo "$out" | awk '/Average Latency/{print $4, $5, $6, $7, $8}')
cpu_us=$(echo "scale=2; ($c1 - $c0) * 1000000 / $HZ / $completed" | bc)
rss_after=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
echo "$out" | sed -n '/Response codes/p'
printf 'services=%s  ready=%.2fs  rss_ready=%d MB  rss_after=%d MB\n' "$N" "$ready" $((rss_ready/1024)) $((rss_after/1024))
printf 'qps=%s  completed=%s  lost=%s  avg_latency=%s  server_cpu_per_query=%s us\n' "$qps" "$completed" "$lost" "$lat" "$cpu_us"
