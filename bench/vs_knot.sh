#!/usr/bin/env bash
# svcdns against Knot DNS (C authoritative server) on the same data, the same core.
#
#   bench/vs_knot.sh [N_SERVICES=10000] [SECONDS=15] [RUNS=2]
#
# Both servers are pinned to CPU 0 (Knot with one UDP and one TCP worker); dnsperf runs on
# CPU 1 and alternates between them, RUNS times per transport. First a sample of answers
# from both must agree (bench/compare_answers.py). Then each server answers the query file
# once, untimed (WARMUP=0 skips it): the runs measure serving, not the first sight of each
# name (svcdns computes and caches, once, the answers it does not precompile, such as
# search-path misses: ~1.1 s of CPU for the 100,000-query file; Knot has nothing to warm).
# Prints QPS, lost queries, latency, server CPU µs per answered query, RSS and the
# svcdns/Knot ratios, for UDP and TCP. EDNS=1 sends every query with an EDNS OPT record
# (dnsperf -e), as dig and Go's resolver do; glibc and musl send none by default.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; SECS=${2:-15}; RUNS=${3:-2}
EDNS_FLAG=(); [ "${EDNS:-0}" != 0 ] && EDNS_FLAG=(-e)
PY=${PY:-.venv/bin/python}
./scripts/need dnsperf:dnsperf knotd:knot taskset:util-linux
DATA=$(pwd)/bench/out/$N
[ -f "$DATA/cluster.local.zone" ] || "$PY" bench/dataset.py "$N"
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
SPORT=$(free_port); HPORT=$(free_port); KPORT=$(free_port)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$KPORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: $WORK
database:
    storage: $WORK/db
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: $DATA
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: cluster.local
    file: cluster.local.zone
  - domain: in-addr.arpa
    file: in-addr.arpa.zone
CONF

taskset -c 0 knotd -c "$WORK/knot.conf" & PIDS+=($!); KPID=$!
taskset -c 0 "$PY" -m svcdns --log-level warning serve --manifests "$DATA/cluster.json" \
  --listen 127.0.0.1:$SPORT --health 127.0.0.1:$HPORT & PIDS+=($!); SPID=$!
until curl -sf "http://127.0.0.1:$HPORT/ready" >/dev/null 2>&1; do sleep 0.1; done
until dig @127.0.0.1 -p $KPORT +time=1 +tries=1 svc-0.ns-0.svc.cluster.local | grep -q "status: NOERROR"; do sleep 0.2; done

"$PY" bench/compare_answers.py "$DATA/queries.txt" $SPORT $KPORT

if [ "${WARMUP:-1}" != 0 ]; then
  for port in $SPORT $KPORT; do
    taskset -c 1 dnsperf "${EDNS_FLAG[@]}" -s 127.0.0.1 -p "$port" -d "$DATA/queries.txt" -n 1 -c 8 -q 200 -t 2 >/dev/null 2>&1
  done
fi

HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
rss() { awk '/VmRSS/{print int($2/1024)}' /proc/$1/status; }
run() {  # run NAME PID PORT MODE -> "qps lost cpu_us avg_latency"
  local c0 c1 out done_ lost qps lat
  c0=$(cpu "$2")
  out=$(taskset -c 1 dnsperf "${EDNS_FLAG[@]}" -s 127.0.0.1 -p "$3" -m "$4" -d "$DATA/queries.txt" -l "$SECS" -c 8 -q 200 -t 2 2>&1)
  c1=$(cpu "$2")
  done_=$(echo "$out" | awk '/Queries completed:/{print $3}')
  lost=$(echo "$out" | awk '/Queries lost:/{print $3}')
  qps=$(echo "$out" | awk '/Queries per second:/{print $4}')
  lat=$(echo "$out" | awk '/Average Latency/{print $4}')
  echo "$qps $lost $(echo "scale=2; ($c1 - $c0) * 1000000 / $HZ / $done_" | bc) $lat"
}
printf '%-5s %-7s %4s %12s %8s %10s %12s %7s\n' mode server run qps lost cpu_us/q avg_lat_s rss_MB
for mode in udp tcp; do
  declare -A sum_qps=() sum_cpu=()
  for r in $(seq 1 "$RUNS"); do
    for srv in svcdns knot; do
      if [ $srv = svcdns ]; then pid=$SPID; port=$SPORT; else pid=$KPID; port=$KPORT; fi
      read -r qps lost cpu lat <<<"$(run $srv $pid $port $mode)"
      printf '%-5s %-7s %4s %12.0f %8s %10s %12s %7s\n' $mode $srv $r "$qps" "$lost" "$cpu" "$lat" "$(rss $pid)"
      sum_qps[$srv]=$(echo "${sum_qps[$srv]:-0} + $qps" | bc); sum_cpu[$srv]=$(echo "${sum_cpu[$srv]:-0} + $cpu" | bc)
    done
  done
  printf '%-5s ratio svcdns/knot: QPS %.2f   CPU efficiency (knot us/q / svcdns us/q) %.2f\n' $mode \
    "$(echo "scale=4; ${sum_qps[svcdns]} / ${sum_qps[knot]}" | bc)" "$(echo "scale=4; ${sum_cpu[knot]} / ${sum_cpu[svcdns]}" | bc)"
done
