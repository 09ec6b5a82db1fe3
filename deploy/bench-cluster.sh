#!/usr/bin/env bash
# Call rate through Kamailio: deploy/run-local.sh N, then SIPp (benches/sipp/call_rate.xml:
# INVITE with SDP, 200, ACK, BYE, no hold time) to `echo` at RATE calls/s, CALLS calls.
#
#   deploy/bench-cluster.sh N RATE CALLS           # through Kamailio to N instances
#   deploy/bench-cluster.sh 1 RATE CALLS direct    # to the one instance itself, no proxy
#
# The per-source limits and max_cps are off, since every call comes from SIPp's one address.
# Prints SIPp's successful and failed calls, the achieved rate, and the CPU seconds of
# Kamailio and of each instance.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2}
rate=${2:-500}
calls=${3:-10000}
mode=${4:-proxy}
command -v sipp >/dev/null || { echo "sipp is not installed (apt-get install sip-tester)" >&2; exit 1; }
cargo build --release -q
export PROXY_PORT=26060 SIP_BASE=26060 HTTP_BASE=26080 RTP_BASE=30000 PING_SECS=2
export SIP_EXTRA=$'invite_rate = 0.0\nmax_cps = 0'
work=$(mktemp -d)
deploy/run-local.sh "$n" >"$work/cluster.out" 2>&1 &
cluster=$!
trap 'kill $cluster 2>/dev/null || true; wait $cluster 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do
  grep -qs 'Ctrl-C stops everything' "$work/cluster.out" && break
  kill -0 $cluster 2>/dev/null || { cat "$work/cluster.out" >&2; exit 1; }
  sleep 0.1
done
grep -q 'Ctrl-C stops everything' "$work/cluster.out" || { cat "$work/cluster.out" >&2; exit 1; }
if [ "$mode" = direct ]; then
  target=127.0.0.1:$((SIP_BASE + 1))
else
  target=127.0.0.1:$PROXY_PORT
fi
# CPU (user + system clock ticks) of Kamailio's processes and of each instance.
kam_pids() { pgrep -f "kamailio -DD -E -f /tmp/switchboard-cluster" | tr '\n' ' '; }
sb_pid() { pgrep -f "serve --config .*/sb-$1/switchboard.toml" | head -1; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
kam0=$(ticks $(kam_pids))
declare -a sb0
for i in $(seq 1 "$n"); do sb0[$i]=$(ticks "$(sb_pid "$i")"); done
start=$(date +%s.%N)
sipp "$target" -sf benches/sipp/call_rate.xml -s echo -i 127.0.0.1 -p $((PROXY_PORT + 50)) \
  -r "$rate" -rp 1000 -m "$calls" -l 20000 -d 0 -nostdin -timeout 120s \
  -trace_stat -stf "$work/stat.csv" -fd 1 -trace_err -error_file "$work/errors.log" >"$work/sipp.out" 2>&1 || true
[ -n "${BENCH_KEEP:-}" ] && cp "$work/errors.log" "$work/cluster.out" "$BENCH_KEEP"/ 2>/dev/null
end=$(date +%s.%N)
hz=$(getconf CLK_TCK)
succ=$(tail -1 "$work/stat.csv" | cut -d';' -f16)
fail=$(tail -1 "$work/stat.csv" | cut -d';' -f18)
secs=$(echo "$end - $start" | bc)
echo "mode=$mode instances=$n offered_rate=$rate calls=$calls successful=$succ failed=$fail wall_s=$secs"
echo "achieved_calls_per_s=$(echo "$succ / $secs" | bc)"
echo "kamailio_cpu_s=$(echo "($(ticks $(kam_pids)) - $kam0) / $hz" | bc -l | cut -c1-6)"
for i in $(seq 1 "$n"); do
  echo "sb-${i}_cpu_s=$(echo "($(ticks "$(sb_pid "$i")") - ${sb0[$i]}) / $hz" | bc -l | cut -c1-6)"
done
