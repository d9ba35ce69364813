#!/usr/bin/env bash
# Soak: dnsperf at 80 % of the measured peak against `svcdns serve` while endpoints churn.
#
#   bench/soak.sh [N_SERVICES=1000] [SECONDS=60] [CHURN_PER_SECOND=10]
#   SOURCE=manifests bench/soak.sh ...
#
# svcdns runs pinned to CPU 0 and serves the bench data set (bench/dataset.py) from
# SOURCE=api (default): the test API server (tests/kubeapi, bench/churn_api.py, its own
#   process) with svcdns following it through --kubeconfig; CHURN_PER_SECOND
#   EndpointSlice writes a second through the API (headless services' endpoints), or
# SOURCE=manifests: the data set file plus a churn file bench/churn.py rewrites
#   CHURN_PER_SECOND times a second, polled every 50 ms.
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
SOURCE=${SOURCE:-api}
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
PORT=$(free_port); HPORT=$(free_port)
PID=""; CHURN_PID=""; RSS_PID=""; API_PID=""
cleanup() {
  for p in $CHURN_PID $RSS_PID $PID $API_PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
rm -f "$OUT/rss.txt" "$OUT/churn.log"
if [ "$SOURCE" = api ]; then
  cp "$DATA/queries.txt" "$OUT/queries.txt"
  taskset -c 1 "$PY" bench/churn_api.py "$DATA/cluster.json" "$OUT/api" --rate "$CHURN" --seconds "$SECS" & API_PID=$!
  until [ -f "$OUT/api/ready" ]; do kill -0 $API_PID 2>/dev/null || { echo "API server exited" >&2; exit 1; }; sleep 0.1; done
  taskset -c 0 "$PY" -m svcdns --log-level warning serve --kubeconfig "$OUT/api/kubeconfig" \
    --listen 127.0.0.1:$PORT --health 127.0.0.1:$HPORT &
  PID=$!
else
  CHURN_FILE=$OUT/churn.json
  "$PY" bench/churn.py "$CHURN_FILE" --init-only
  # the bench mix, plus 5 % questions about the churning services
  { cat "$DATA/queries.txt"; awk 'NR % 20 == 0 { printf "churn-%d.churn.svc.cluster.local A\n", NR % 10 }' "$DATA/queries.txt"; } > "$OUT/queries.txt"
  taskset -c 0 "$PY" -m svcdns --log-level warning serve --manifests "$DATA/cluster.json" --manifests "$CHURN_FILE" \
    --poll-interval 0.05 --listen 127.0.0.1:$PORT --health 127.0.0.1:$HPORT &
  PID=$!
fi
until curl -sf "http://127.0.0.1:$HPORT/ready" >/dev/null 2>&1; do
  kill -0 $PID 2>/dev/null || { echo "svcdns exited" >&2; exit 1; }
  sleep 0.05
done
rss() { awk '/VmRSS/{print $2}' /proc/$PID/status; }

peak=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l 10 -c 8 -q 200 -t 2 2>&1 | awk '/Queries per second:/{print int($4)}')
target=$(( peak * 8 / 10 ))
echo "source ${SOURCE}: peak ${peak} qps; soaking ${SECS} s at ${target} qps with ${CHURN} endpoint updates/s"

( while kill -0 $PID 2>/dev/null; do rss >> "$OUT/rss.txt"; sleep 1; done ) & RSS_PID=$!
if [ "$SOURCE" = api ]; then
  touch "$OUT/api/start"
else
  taskset -c 1 "$PY" bench/churn.py "$CHURN_FILE" --rate "$CHURN" --seconds "$SECS" --log "$OUT/churn.log" & CHURN_PID=$!
fi
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$OUT/queries.txt" -l "$SECS" -c 8 -q 100 -t 2 -Q "$target" -v \
  > "$OUT/dnsperf.txt" 2>&1 || true
if [ -n "$CHURN_PID" ]; then wait $CHURN_PID 2>/dev/null || true; CHURN_PID=""; fi
if [ "$SOURCE" = api ]; then
  for _ in $(seq 100); do [ -f "$OUT/api/done" ] && break; sleep 0.1; done
fi
kill $RSS_PID 2>/dev/null || true; RSS_PID=""

grep -E "Queries (sent|completed|lost)|Queries per second|Response codes" "$OUT/dnsperf.txt" | sed 's/^ *//'
awk '$1 == ">" && $2 != "T" && $2 != "I" { print $NF }' "$OUT/dnsperf.txt" | sort -g > "$OUT/latency.txt"
n=$(wc -l < "$OUT/latency.txt")
for p in 50 99 99.9; do
  i=$(awk -v n="$n" -v p="$p" 'BEGIN { i = int(n * p / 100 + 0.999999); print (i < 1 ? 1 : i) }')
  printf 'p%s latency: %.3f ms\n' "$p" "$(sed -n "${i}p" "$OUT/latency.txt" | awk '{print $1 * 1000}')"
done
[ "$SOURCE" = api ] && cp "$OUT/api/churn.log" "$OUT/churn.log"
updates=$(wc -l < "$OUT/churn.log")
awk -v u="$updates" 'NR == 1 { first = $1 } { if ($1 > max) max = $1; if (min == "" || $1 < min) min = $1; last = $1 }
     END { printf "endpoint updates: %d; RSS MB: first %d, min %d, max %d, last %d\n", u, first / 1024, min / 1024, max / 1024, last / 1024 }' "$OUT/rss.txt"
