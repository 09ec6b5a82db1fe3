#!/usr/bin/env bash
# Starts Kamailio (deploy/kamailio/kamailio.cfg) and N switchboard instances on 127.0.0.1,
# prints their ports, and stops them all on exit (Ctrl-C).
#
#   deploy/run-local.sh [N]        N instances, 2 by default
#
# Ports (override through the environment):
#   PROXY_PORT  Kamailio, UDP and TCP                     5060
#   SIP_BASE    instance i listens for SIP on SIP_BASE+i  5070
#   HTTP_BASE   instance i serves its API on HTTP_BASE+i  8080
#   RTP_BASE    instance i takes RTP ports from RTP_BASE+1000*i, 1000 of them  20000
# PING_SECS sets Kamailio's probing interval (default 2), SHM_MB its shared memory (256). SIP_EXTRA holds more lines for each
# instance's [sip] section (e.g. "invite_rate = 0.0"). KEEP=1 keeps the temporary folder
# (configurations, logs, CDRs, recordings) after exit.
set -euo pipefail

N=${1:-2}
case "$N" in
  '' | *[!0-9]*) echo "usage: $0 [N]" >&2; exit 2 ;;
esac
if [ "$N" -lt 1 ] || [ "$N" -gt 9 ]; then
  echo "N must be 1 to 9" >&2
  exit 2
fi
PROXY_PORT=${PROXY_PORT:-5060}
SIP_BASE=${SIP_BASE:-5070}
HTTP_BASE=${HTTP_BASE:-8080}
RTP_BASE=${RTP_BASE:-20000}
PING_SECS=${PING_SECS:-2}
SHM_MB=${SHM_MB:-256}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v kamailio >/dev/null 2>&1 || {
  echo "kamailio is not installed (apt-get install -y kamailio)" >&2
  exit 1
}
if [ -x "$ROOT/target/release/switchboard" ]; then
  BIN=$ROOT/target/release/switchboard
elif [ -x "$ROOT/target/debug/switchboard" ]; then
  BIN=$ROOT/target/debug/switchboard
else
  (cd "$ROOT" && cargo build --release)
  BIN=$ROOT/target/release/switchboard
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-cluster.XXXXXX")
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  # SIGTERM drains an instance; calls still up after five seconds are not waited for.
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "files kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every instance writes into one recordings folder (recording ids are random, so they never
# clash) and re-reads it, so each lists and serves every instance's recordings.
mkdir -p "$WORK/recordings" "$WORK/kamailio"
: > "$WORK/kamailio/dispatcher.list"
for i in $(seq 1 "$N"); do
  dir=$WORK/sb-$i
  mkdir -p "$dir"
  cat > "$dir/switchboard.toml" <<TOML
[server]
name = "sb-$i"

[sip]
listen = "127.0.0.1:$((SIP_BASE + i))"
trusted_proxies = ["127.0.0.1:$PROXY_PORT"]
drain_secs = 60
${SIP_EXTRA:-}

[rtp]
port_min = $((RTP_BASE + 1000 * i))
port_max = $((RTP_BASE + 1000 * i + 999))

[http]
listen = "127.0.0.1:$((HTTP_BASE + i))"

[paths]
recordings = "$WORK/recordings"
scripts = "$ROOT/scripts"
prompts = "$ROOT/prompts"

[cdr]
dir = "$dir/cdr"
TOML
  printf '1 sip:127.0.0.1:%s\n2 sip:127.0.0.1:%s\n' "$((SIP_BASE + i))" "$((SIP_BASE + i))" \
    >> "$WORK/kamailio/dispatcher.list"
  "$BIN" serve --config "$dir/switchboard.toml" > "$dir/stdout" 2> "$dir/log" &
  PIDS+=($!)
done

cp "$ROOT/deploy/kamailio/kamailio.cfg" "$WORK/kamailio/"
cat > "$WORK/kamailio/switchboard-local.cfg" <<CFG
#!substdef "!SB_ADDR!127.0.0.1!g"
#!substdef "!SB_PORT!$PROXY_PORT!g"
#!substdef "!SB_LIST!$WORK/kamailio/dispatcher.list!g"
#!substdef "!SB_PING_SECS!$PING_SECS!g"
#!substdef "!SB_SHM_MB!$SHM_MB!g"
CFG
kamailio -DD -E -f "$WORK/kamailio/kamailio.cfg" -P "$WORK/kamailio/kamailio.pid" \
  -w "$WORK/kamailio" -Y "$WORK/kamailio" > "$WORK/kamailio/log" 2>&1 &
PIDS+=($!)

# Each instance prints READY once it listens; give them ten seconds.
for i in $(seq 1 "$N"); do
  for _ in $(seq 1 100); do
    grep -q '^READY' "$WORK/sb-$i/stdout" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^READY' "$WORK/sb-$i/stdout" || {
    echo "sb-$i did not start; its log:" >&2
    tail -20 "$WORK/sb-$i/log" >&2
    exit 1
  }
done
sleep 0.5
kill -0 "${PIDS[-1]}" 2>/dev/null || {
  echo "kamailio did not start; its log:" >&2
  tail -20 "$WORK/kamailio/log" >&2
  exit 1
}

echo "kamailio  sip:127.0.0.1:$PROXY_PORT (udp, tcp)   log $WORK/kamailio/log"
for i in $(seq 1 "$N"); do
  echo "sb-$i      sip:127.0.0.1:$((SIP_BASE + i))  http://127.0.0.1:$((HTTP_BASE + i))  log $WORK/sb-$i/log"
done
echo "recordings $WORK/recordings"
echo "call sip:conf-NAME@127.0.0.1:$PROXY_PORT for a room, sip:ivr@127.0.0.1:$PROXY_PORT for the IVR; Ctrl-C stops everything"
wait -n "${PIDS[@]}" || true
echo "a process ended; stopping the rest" >&2
