#!/usr/bin/env bash
# Soak: dnsperf at 80 % of the measured peak against `svcdns serve` while endpoints churn.
#
#   bench/soak.sh [N_SERVICES=1000] [SECONDS=60] [CHURN_PER_SECOND=10]
#
# svcdns runs pinned to CPU 0 with the bench data set (bench/dataset.py) plus a churn file
# that bench/churn.py rewrites CHURN_PER_SECOND times a second (each write changes one
# headless service's endpoints; svcdns polls it every 50 ms). No test API server here:
# the churn goes through the manifest source (the live source's API server lives with
# the live-source issue; swap bench/churn.py for it when it lands).
# Steps: measure peak QPS (10 s, unthrottled), then SECONDS at 80 % of it with churn
# running; report lost queries, latency percentiles (from dnsperf -v) and RSS sampled
# every second. Needs dnsperf and taskset (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}; SECS=${2:-60}; CHURN=${3:-10}
PY=${PY:-.venv/bin/python}
./scripts/need dnsperf:dnsperf taskset:util-linux
DATA=bench/out/$N
[ -f "$DATA/cluster.json" ] || "$PY" bench/dataset.py "$N"
OUT=bench/out/soak; mkdir -p "$OUT"
CHURN_FILE=$OUT/churn.json
"$PY" bench/churn.py "$CHURN_FILE" --init-only
# the bench mix, plus 5 % questions about the churning services
{ cat "$DATA/queries.txt"; awk 'NR % 20 == 0 { printf "churn-%d.churn.svc.cluster.local A\n", NR % 10 }' "$DATA/queries.txt"; } > "$OUT/queries.txt"
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
PORT=$(free_port); HPORT=$(free_port)

taskset -c 0 "$PY" -m svcdns --log-level warning serve --manifests "$DATA/cluster.json" --manifests "$CHURN_FILE" \
  --poll-interval 0.05 --listen 127.0.0.1:$PORT --health 127.0.0.1:$HPORT &
PID=$!
CHURN_PID=""; RSS_PID=""
cleanup() {
  for p in $CHURN_PID $RSS_PID $PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
until curl -sf "http://127.0.0.1:$HPORT/ready" >/dev/null 2>&1; do
  kill -0 $PID 2>/dev/null || { echo "svcdns exited" >&2; exit 1; }
  sleep 0.05
done
rss() { awk '/VmRSS/{print $2}' /proc/$PID/status; }

peak=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l 10 -c 8 -q 200 -t 2 2>&1 | awk '/Queries per second:/{print int($4)}')
target=$(( peak * 8 / 10 ))
echo "peak ${peak} qps; soaking ${SECS} s at ${target} qps with ${CHURN} endpoint updates/s"

rm -f "$OUT/rss.txt" "$OUT/churn.log"
( while kill -0 $PID 2>/dev/null; do rss >> "$OUT/rss.txt"; sleep 1; done ) & RSS_PID=$!
taskset -c 1 "$PY" bench/churn.py "$CHURN_FILE" --rate "$CHURN" --seconds "$SECS" --log "$OUT/churn.log" & CHURN_PID=$!
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l "$SECS" -c 8 -q 100 -t 2 -Q "$target" -v \
  > "$OUT/dnsperf.txt" 2>&1 || true
wait $CHURN_PID 2>/dev/null || true; CHURN_PID=""
kill $RSS_PID 2>/dev/null || true; RSS_PID=""

grep -E "Queries (sent|completed|lost)|Queries per second|Response codes" "$OUT/dnsperf.txt" | sed 's/^ *//'
awk '$1 == ">" && $2 != "T" && $2 != "I" { print $NF }' "$OUT/dnsperf.txt" | sort -g > "$OUT/latency.txt"
n=$(wc -l < "$OUT/latency.txt")
for p in 50 99 99.9; do
  i=$(awk -v n="$n" -v p="$p" 'BEGIN { i = int(n * p / 100 + 0.999999); print (i < 1 ? 1 : i) }')
  printf 'p%s latency: %.3f ms\n' "$p" "$(sed -n "${i}p" "$OUT/latency.txt" | awk '{print $1 * 1000}')"
done
updates=$(wc -l < "$OUT/churn.log")
awk -v u="$updates" 'NR == 1 { first = $1 } { if ($1 > max) max = $1; if (min == "" || $1 < min) min = $1; last = $1 }
     END { printf "endpoint updates: %d; RSS MB: first %d, min %d, max %d, last %d\n", u, first / 1024, min / 1024, max / 1024, last / 1024 }' "$OUT/rss.txt"
