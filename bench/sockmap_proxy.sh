#!/bin/bash
# `tracekit sockmap proxy` next to socat and no proxy at all: iperf3 throughput (one stream,
# client to server, 4 s, 3 repetitions in turn) in a network namespace of its own, and the
# proxy process's own CPU time (user+system of its threads and reaped children, /proc/PID/stat). The kernel's
# splicing runs in softirq and kworkers, not charged to tracekit: that column says what user
# space no longer does. As root; needs iperf3 and socat (apt-get install iperf3 socat).
# TRACEKIT: the binary (default target/release/tracekit).
set -euo pipefail
TK=${TRACEKIT:-target/release/tracekit}
NS=tkbench-proxy
for t in iperf3 socat; do command -v $t >/dev/null || { echo "needs $t: apt-get install $t" >&2; exit 2; }; done
ip netns add $NS
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; ip netns del $NS; }
trap cleanup EXIT
ip -n $NS link set lo up
ip netns exec $NS iperf3 -s -p 9000 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec $NS socat TCP-LISTEN:8081,fork,reuseaddr TCP:127.0.0.1:9000 2>/dev/null & SOCAT=$!; PIDS+=($SOCAT)
ip netns exec $NS "$TK" sockmap proxy 127.0.0.1:8080 127.0.0.1:9000 >/dev/null 2>&1 & TKP=$!; PIDS+=($TKP)
# ready when all three listen
for _ in $(seq 100); do
  [ "$(ip netns exec $NS ss -Hltn 'sport = :9000 or sport = :8080 or sport = :8081' | wc -l)" -ge 3 ] && break
  sleep 0.05
done
# utime + stime (all threads) + cutime + cstime (reaped children: socat forks one per connection)
ticks() { local f; read -r -a f < "/proc/$1/stat"; echo $((f[13] + f[14] + f[15] + f[16])); }
hz=$(getconf CLK_TCK)
printf '%-10s %8s %12s\n' path GB/s proxy-cpu-s
for rep in 1 2 3; do
  for target in direct:9000 socat:8081 tracekit:8080; do
    name=${target%%:*} port=${target##*:} pid=
    case $name in socat) pid=$SOCAT ;; tracekit) pid=$TKP ;; esac
    c0=0; [ -n "$pid" ] && c0=$(ticks $pid)
    gbs=$(ip netns exec $NS iperf3 -c 127.0.0.1 -p "$port" -t 4 -J \
      | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e9))')
    cpu=-; [ -n "$pid" ] && cpu=$(python3 -c "print('%.2f' % (($(ticks $pid) - $c0) / $hz))")
    printf '%-10s %8s %12s\n' "$name" "$gbs" "$cpu"
  done
done
