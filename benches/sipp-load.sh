#!/usr/bin/env bash
# SIPp load against a release build on 127.0.0.1.
#   benches/sipp-load.sh rate  RATE CALLS      # call rate: INVITE/200/ACK/BYE, no hold time
#   benches/sipp-load.sh idle  CALLS HOLD_MS   # memory: CALLS concurrent idle dialogs (HOLD_MS > 45000)
#   benches/sipp-load.sh record CALLS          # CALLS concurrent recordings fed by SIPp's RTP
#   benches/sipp-load.sh room MEMBERS          # one conference room of MEMBERS callers, each
#                                              # sending speech (A-law): CPU, late ticks, memory
#   benches/sipp-load.sh media CALLS [USER]    # CALLS concurrent answered calls to USER (default
#                                              # echo), each a G.711 leg sending a frame every
#                                              # 20 ms: CPU, late ticks, memory. USER=ivr: each
#                                              # call runs the IVR script (menu prompt, collect);
#                                              # USER=playback: the menu prompt over and over.
#   benches/sipp-load.sh dial CALLS            # CALLS concurrent calls to echo, then CALLS calls
#                                              # whose script dials a SIPp far end (-rtp_echo)
#                                              # and bridges it: CPU per call, side by side
#   benches/sipp-load.sh floor CALLS [USER]    # the kernel's floor beside the server: CALLS
#                                              # calls to USER (default echo; playback: the
#                                              # menu prompt played over and over; recording:
#                                              # what SIPp echoes recorded to WAV) on the server,
#                                              # then on benches/floor/ (RTP only), SIPp
#                                              # echoing every packet (-rtp_echo), rounds
#                                              # alternating (FLOOR_ROUNDS, default 3; FLOOR_SECS
#                                              # of steady state each, default 20): CPU per leg
#                                              # of both and their ratio. Two servers take
#                                              # turns: [media] io = "sockets", then "uring"
#                                              # (on SIP port N+40; FLOOR_SECOND=inband-auto:
#                                              # sockets with [dtmf] inband = "auto" instead;
#                                              # FLOOR_SECOND=build=PATH: the same settings on
#                                              # another build, e.g. the commit before),
#                                              # then the floor
#   benches/sipp-load.sh setup RATE [SECS] [USER]  # call set-up: RATE new calls a second for SECS
#                                              # (default 20) to USER (default playback), each
#                                              # held 1 s with RTP both ways (-rtp_echo): failed
#                                              # calls, server CPU per call (set-up, media and
#                                              # teardown), peak RSS
#   benches/sipp-load.sh originate RATE CALLS  # POST /api/calls at RATE/s to a SIPp far end
#                                              # that answers; the script hangs up at once:
#                                              # calls/s placed and ended, success ratio
#                                              # (needs python3 for the HTTP load)
# SIPP_LOAD_PORT=N moves the server's SIP port (default 25060); SIPp takes N+10, a far end N+20.
# MEDIA_IO=auto|uring|sockets sets the server's [media] io (default: the embedded default).
# SERVER_BIN=PATH runs another build of the server (e.g. an older commit's, for a comparison
# in alternating runs); the default is this tree's release build.
# KEEP_LOGS=DIR (setup): keeps the server's log, SIPp's output and the RSS samples there.
# SERVER_WRAP runs the server under a tool, e.g. SERVER_WRAP="heaptrack -o /tmp/server"
# (the CPU and memory figures are then the tool's process's, not the server's).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-rate}
cargo build --release -q
port=${SIPP_LOAD_PORT:-25060}
work=$(mktemp -d)
far_pid=
uring_server=
# KILL: a server told to stop drains its calls first, and would hold the SIP port against the
# next run.
trap 'kill -KILL $server $far_pid $uring_server 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
# Rooms hold 100 members by default; the room benchmark needs more.
printf '[conference]\nmax_members = 2000\n[cdr]\ndir = "%s/cdr"\n' "$work" >"$work/bench.toml"
# Placed calls: the far end is a SIPp on port $far; the shipped scripts plus two of their own.
far=$(( port + 20 ))
if [ "$mode" = dial ] || [ "$mode" = originate ] || [ "$mode" = floor ] || [ "$mode" = media ] || [ "$mode" = setup ]; then
  mkdir -p "$work/scripts"
  cp scripts/*.rhai "$work/scripts/"
  echo 'dial("sip:far@127.0.0.1:'$far'", #{timeout_secs: 10}); hangup();' >"$work/scripts/bench-dial.rhai"
  echo 'hangup();' >"$work/scripts/bench-hangup.rhai"
  # A playback call: the menu prompt over and over, for as long as the caller stays.
  echo 'answer(); loop { play("menu"); }' >"$work/scripts/bench-playback.rhai"
  # A recording call: what the caller sends goes to a WAV for as long as the caller stays.
  echo 'answer(); record(#{max_secs: 3600, silence_secs: 0, min_secs: 0, beep: false});' \
    >"$work/scripts/bench-record.rhai"
  cat >>"$work/bench.toml" <<TOML
[paths]
scripts = "$work/scripts"
[outbound]
allow = ["sip:*@127.0.0.1:*"]
max_calls = 5000
[[dialplan]]
exact = "echo"
script = "echo"
[[dialplan]]
exact = "bridge"
script = "bench-dial"
[[dialplan]]
exact = "playback"
script = "bench-playback"
[[dialplan]]
exact = "ivr"
script = "ivr"
[[dialplan]]
exact = "recording"
script = "bench-record"
TOML
fi
# Every load comes from SIPp's one address at rates far above a single phone's: the
# per-source and server-wide call-rate limits are lifted (at 200 calls/s the default per-source
# limit let about 700 of 1,000 calls in, then blocked the address).
printf '[sip]\ninvite_rate = 0.0\nmax_cps = 0\nmax_pending_invites = 0\n' >>"$work/bench.toml"
# The floor compares both ways of moving datagrams: this server with sockets, a second one
# (started below) with io_uring.
[ "$mode" = floor ] && MEDIA_IO=sockets
rtp_ports=30000-60000
[ "$mode" = floor ] && rtp_ports=30000-44999
if [ -n "${MEDIA_IO:-}" ]; then
  printf '[media]\nio = "%s"\n' "$MEDIA_IO" >>"$work/bench.toml"
fi
# Starts a server with config $1 on SIP port $2 and RTP ports $3, logging to $work/$4.log;
# sets $started to its pid once it is ready.
start_server() {
  RUST_LOG=info,switchboard::server=debug \
  ${SERVER_WRAP:-} "${5:-${SERVER_BIN:-./target/release/switchboard}}" serve --config "$1" --sip-listen 127.0.0.1:$2 --rtp-ports "$3" \
    --recordings "$work/recordings" --http-listen 127.0.0.1:0 \
    >"$work/$4.ready" 2>"$work/$4.log" &
  started=$!
  for _ in $(seq 1 100); do grep -q READY "$work/$4.ready" 2>/dev/null && break; sleep 0.05; done
}
start_server "$work/bench.toml" "$port" "$rtp_ports" server
server=$started
ln -s "$work/server.ready" "$work/ready"
rss() { awk '/VmRSS/ {print $2}' /proc/$server/status; }
base=$(rss)
# Measures SECONDS of steady state: waits for the next media statistics line (they come every
# 10 s) so call set-up is not counted, then sets cpu0/cpu1 (clock ticks), hz, late0/late1
# (late ticks at either end) and held (RSS in KiB at the end).
steady_state() {
  late() { grep "media workers" "$work/server.log" | tail -1 | sed 's/.*late_ticks=\([0-9]*\).*/\1/'; }
  local lines0
  lines0=$(grep -c "media workers" "$work/server.log" || true)
  for _ in $(seq 1 120); do
    [ "$(grep -c "media workers" "$work/server.log" || true)" -gt "$lines0" ] && break; sleep 0.1
  done
  late0=$(late)
  hz=$(getconf CLK_TCK)
  cpu0=$(awk '{print $14+$15}' /proc/$server/stat)
  sleep "$1"
  cpu1=$(awk '{print $14+$15}' /proc/$server/stat)
  late1=$(late)
  held=$(rss)
}
case "$mode" in
  rate)
    rate=${2:-1000}; calls=${3:-30000}
    cpu0=$(awk '{print $14+$15}' /proc/$server/stat)
    start=$(date +%s.%N)
    sipp 127.0.0.1:$port -sf benches/sipp/call_rate.xml -s echo -i 127.0.0.1 -p 25070 \
      -r "$rate" -rp 1000 -m "$calls" -l 20000 -d 0 -nostdin -timeout 120s \
      -trace_stat -stf "$work/stat.csv" -fd 1 >"$work/sipp.out" 2>&1 || true
    end=$(date +%s.%N)
    cpu1=$(awk '{print $14+$15}' /proc/$server/stat)
    hz=$(getconf CLK_TCK)
    succ=$(tail -1 "$work/stat.csv" | cut -d';' -f16)
    fail=$(tail -1 "$work/stat.csv" | cut -d';' -f18)
    secs=$(echo "$end - $start" | bc)
    echo "cores=$(nproc) offered_rate=$rate calls=$calls successful=$succ failed=$fail wall_s=$secs"
    echo "achieved_calls_per_s=$(echo "$succ / $secs" | bc)"
    echo "server_cpu_s=$(echo "($cpu1 - $cpu0) / $hz" | bc -l | cut -c1-6)"
    ;;
  setup)
    rate=${2:-1500}; secs=${3:-20}; user=${4:-playback}
    calls=$(( rate * secs ))
    hz=$(getconf CLK_TCK)
    cpu0=$(awk '{print $14+$15}' /proc/$server/stat)
    start=$(date +%s.%N)
    ( while kill -0 $server 2>/dev/null; do echo "$(date +%s.%N | cut -c1-14) $(rss)"; sleep 0.5; done ) >"$work/rss.txt" &
    sampler=$!
    sipp 127.0.0.1:$port -sf benches/sipp/call_rate.xml -s "$user" -i 127.0.0.1 -p 25070 \
      -mp 26000 -rtp_echo -r "$rate" -rp 1000 -m "$calls" -l $(( rate * 4 )) -d 1000 -nostdin \
      -timeout $(( secs + 60 ))s -trace_stat -stf "$work/stat.csv" -fd 1 >"$work/sipp.out" 2>&1 || true
    end=$(date +%s.%N)
    cpu1=$(awk '{print $14+$15}' /proc/$server/stat)
    succ=$(tail -1 "$work/stat.csv" | cut -d';' -f16)
    fail=$(tail -1 "$work/stat.csv" | cut -d';' -f18)
    peak=$(awk '/VmHWM/ {print $2}' /proc/$server/status)
    wall=$(echo "$end - $start" | bc)
    echo "cores=$(nproc) offered_rate=$rate calls=$calls user=$user successful=$succ failed=$fail wall_s=$wall date=$(date -u +%F)"
    echo "server_cpu_s=$(echo "($cpu1 - $cpu0) / $hz" | bc -l | cut -c1-6) server_cpu_ms_per_call=$(echo "($cpu1 - $cpu0) * 1000 / $hz / $calls" | bc -l | cut -c1-6)"
    sleep 3
    kill $sampler 2>/dev/null || true
    echo "rss_3s_after_the_last_call_kib=$(rss)"
    if [ -n "${KEEP_LOGS:-}" ]; then
      mkdir -p "$KEEP_LOGS" && cp "$work/rss.txt" "$work/sipp.out" "$work/server.log" "$work/stat.csv" "$KEEP_LOGS/"
    fi
    echo "rss_before_kib=$base rss_peak_kib=$peak rss_growth_kib=$(( peak - base )) load_average=$(cut -d' ' -f1-3 /proc/loadavg)"
    ;;
  media)
    calls=${2:-1000}; user=${3:-echo}
    ramp=$(( calls / 200 + 2 ))
    sipp 127.0.0.1:$port -sf benches/sipp/call_rate.xml -s "$user" -i 127.0.0.1 -p 25070 \
      -r 200 -m "$calls" -l "$calls" -d $(( (ramp + 55) * 1000 )) -nostdin -timeout 120s -bg \
      >/dev/null 2>&1 || true
    sleep "$ramp"
    steady_state 30
    last=$(grep "media workers" "$work/server.log" | tail -1)
    echo "cores=$(nproc) calls=$calls user=$user threads=$(awk '/Threads/ {print $2}' /proc/$server/status)"
    echo "server_cpu_pct_of_one_core=$(echo "($cpu1 - $cpu0) * 100 / $hz / 30" | bc -l | cut -c1-6)"
    echo "cpu_pct_of_a_core_per_leg=$(echo "($cpu1 - $cpu0) * 100 / $hz / 30 / $calls" | bc -l | cut -c1-7)"
    echo "rss_per_leg_bytes=$(( (held - base) * 1024 / calls ))"
    echo "late_ticks_in_steady_state=$(( late1 - late0 )) (over 30 s, ~1,500 ticks per worker)"
    echo "last media stats: $last"
    pkill -f "sipp 127.0.0.1:$port" || true
    ;;
  record)
    # CALLS concurrent callers leave a message: SIPp plays 7 s of A-law speech into each
    # recording (tests/sipp/uac_message_pcap.xml); CPU is sampled while all are recording.
    calls=${2:-200}
    ramp=$(( calls / 100 ))
    sipp 127.0.0.1:$port -sf tests/sipp/uac_message_pcap.xml -s message -i 127.0.0.1 -p 25070 \
      -mp 26000 -r 100 -m "$calls" -l "$calls" -nostdin -timeout 120s -bg >/dev/null 2>&1 || true
    sleep $(( ramp + 7 ))
    hz=$(getconf CLK_TCK)
    cpu0=$(awk '{print $14+$15}' /proc/$server/stat)
    sleep 3
    cpu1=$(awk '{print $14+$15}' /proc/$server/stat)
    sleep 8
    done=$(grep -l '"state": *"complete"' "$work"/recordings/*.json 2>/dev/null | wc -l)
    echo "cores=$(nproc) recording_calls=$calls recordings_finished=$done"
    echo "server_cpu_pct_of_one_core=$(echo "($cpu1 - $cpu0) * 100 / $hz / 3" | bc -l | cut -c1-6)"
    echo "cpu_pct_of_a_core_per_recording_leg=$(echo "($cpu1 - $cpu0) * 100 / $hz / 3 / $calls" | bc -l | cut -c1-7)"
    grep "media workers" "$work/server.log" | tail -1
    pkill -f "sipp 127.0.0.1:$port" || true
    ;;
  room)
    # MEMBERS callers join room "load" (dial conf-load) at 100/s; each sends 49 s of speech.
    members=${2:-500}
    ramp=$(( members / 100 + 2 ))
    sipp 127.0.0.1:$port -sf benches/sipp/conf_member.xml -s conf-load -i 127.0.0.1 -p 25070 \
      -mp 26000 -r 100 -m "$members" -l "$members" -nostdin -timeout 120s -bg >/dev/null 2>&1 || true
    sleep "$ramp"
    steady_state 20
    in_room=$(curl -s http://$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/ready")/api/rooms/load | grep -o '"call_id"' | wc -l)
    echo "cores=$(nproc) members=$members in_room=$in_room"
    echo "server_cpu_pct_of_one_core=$(echo "($cpu1 - $cpu0) * 100 / $hz / 20" | bc -l | cut -c1-6)"
    echo "cpu_pct_of_a_core_per_member=$(echo "($cpu1 - $cpu0) * 100 / $hz / 20 / $members" | bc -l | cut -c1-7)"
    echo "rss_per_member_bytes=$(( (held - base) * 1024 / members ))"
    echo "late_ticks_in_steady_state=$(( late1 - late0 )) (over 20 s, ~1,000 ticks per worker)"
    grep "media workers" "$work/server.log" | tail -1
    pkill -f "sipp 127.0.0.1:$port" || true
    ;;
  dial)
    # Both phases hold their calls long enough for a 20 s steady state after the next
    # statistics line, then end them with BYEs; the server is the same process throughout.
    calls=${2:-200}
    ramp=$(( calls / 200 + 2 ))
    sipp -sf benches/sipp/dial_far.xml -i 127.0.0.1 -p $far -mp 27000 -rtp_echo -nostdin \
      -timeout 300s >/dev/null 2>&1 &
    far_pid=$!
    api=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/ready")
    echo "cores=$(nproc) calls=$calls load_average=$(cut -d' ' -f1-3 /proc/loadavg)"
    for user in echo bridge; do
      sipp 127.0.0.1:$port -sf benches/sipp/call_rate.xml -s "$user" -i 127.0.0.1 -p $(( port + 10 )) \
        -r 200 -m "$calls" -l "$calls" -d $(( (ramp + 40) * 1000 )) -nostdin -timeout 120s \
        >/dev/null 2>&1 &
      uac=$!
      sleep "$ramp"
      steady_state 20
      stat() { curl -s "http://$api/api/stats" | sed "s/.*\"$1\":\([0-9]*\).*/\1/"; }
      legs=$(stat legs); in0=$(stat rtp_packets_in); sleep 2; in1=$(stat rtp_packets_in)
      rc=0; wait $uac || rc=$?
      echo "$user: legs=$legs rtp_in_per_s=$(( (in1 - in0) / 2 )) sipp_exit=$rc server_cpu_pct_of_one_core=$(echo "($cpu1 - $cpu0) * 100 / $hz / 20" | bc -l | cut -c1-6)" \
        "cpu_pct_of_a_core_per_call=$(echo "($cpu1 - $cpu0) * 100 / $hz / 20 / $calls" | bc -l | cut -c1-7)" \
        "late_ticks=$(( late1 - late0 ))"
    done
    kill "$far_pid" 2>/dev/null || true
    ;;
  originate)
    rate=${2:-100}; calls=${3:-2000}
    sipp -sf benches/sipp/dial_far.xml -i 127.0.0.1 -p $far -mp 27000 -nostdin -timeout 300s \
      >/dev/null 2>&1 &
    far_pid=$!
    api=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/ready")
    cpu0=$(awk '{print $14+$15}' /proc/$server/stat)
    # Paced POSTs on one keep-alive connection; then the CDRs tell which calls were answered
    # and when the last one ended.
    python3 - "$api" "$rate" "$calls" "$far" "$work/cdr" <<'PY'
import datetime, glob, http.client, json, sys, time
api, rate, calls, far, cdr = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
host, port = api.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=10)
body = json.dumps({"to": f"sip:far@127.0.0.1:{far}", "script": "bench-hangup"})
accepted, refused, lag = 0, 0, 0.0
t0 = time.time()
for i in range(calls):
    due = t0 + i / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
    else:
        lag = max(lag, now - due)
    conn.request("POST", "/api/calls", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status == 201:
        accepted += 1
    else:
        refused += 1
posted = time.time() - t0
def records():
    out = []
    for f in glob.glob(cdr + "/*.jsonl"):
        for line in open(f):
            out.append(json.loads(line))
    return out
# Every accepted call writes one record when it ends; wait for them (at most 60 s).
for _ in range(600):
    if len(records()) >= accepted:
        break
    time.sleep(0.1)
recs = records()
answered = [r for r in recs if r.get("answered_at")]
ends = [datetime.datetime.fromisoformat(r["ended_at"].replace("Z", "+00:00")).timestamp() for r in recs]
wall = (max(ends) if ends else time.time()) - t0
print(f"offered_rate={rate:g} calls={calls} posted_in_s={posted:.2f} max_post_lag_s={lag:.3f} accepted={accepted} refused={refused}")
print(f"records={len(recs)} answered={len(answered)} success_ratio={len(answered) / calls:.4f} wall_s={wall:.2f}")
print(f"achieved_calls_per_s={len(answered) / wall:.1f}")
PY
    cpu1=$(awk '{print $14+$15}' /proc/$server/stat)
    hz=$(getconf CLK_TCK)
    echo "cores=$(nproc) server_cpu_s=$(echo "($cpu1 - $cpu0) / $hz" | bc -l | cut -c1-6) load_average=$(cut -d' ' -f1-3 /proc/loadavg)"
    kill "$far_pid" 2>/dev/null || true
    ;;
  floor)
    calls=${2:-200}; user=${3:-echo}; rounds=${FLOOR_ROUNDS:-3}; secs=${FLOOR_SECS:-20}
    cargo build --release -q --example floor
    ramp=$(( calls / 200 + 2 ))
    floor_port=$(( port + 30 ))
    ./target/release/examples/floor 127.0.0.1:$floor_port >"$work/floor.out" 2>&1 &
    far_pid=$!
    for _ in $(seq 1 100); do grep -q READY "$work/floor.out" 2>/dev/null && break; sleep 0.05; done
    hz=$(getconf CLK_TCK)
    # % of a core per leg of process PID over $secs of steady state, under CALLS calls to the
    # SIP port PORT; the calls end (BYE) before it returns.
    per_leg() {
      sipp 127.0.0.1:$1 -sf benches/sipp/call_rate.xml -s "$user" -i 127.0.0.1 -p $(( port + 10 )) \
        -mp 26000 -rtp_echo -r 200 -m "$calls" -l "$calls" -d $(( (ramp + secs + 3) * 1000 )) \
        -nostdin -timeout 120s >/dev/null 2>&1 &
      local uac=$! c0 c1
      sleep $(( ramp + 2 ))
      c0=$(awk '{print $14+$15}' /proc/$2/stat)
      sleep "$secs"
      c1=$(awk '{print $14+$15}' /proc/$2/stat)
      wait "$uac" || true
      echo "($c1 - $c0) * 100 / $hz / $secs / $calls" | bc -l | cut -c1-7
    }
    uring_port=$(( port + 40 ))
    # The second server: io_uring (default), or FLOOR_SECOND=inband-auto: sockets with
    # [dtmf] inband = "auto" (calls that agreed RFC 4733 skip in-band detection).
    second=${FLOOR_SECOND:-uring}
    second_bin=
    case "$second" in
      uring) sed 's/^io = "sockets"$/io = "uring"/' "$work/bench.toml" >"$work/uring.toml" ;;
      inband-auto) cp "$work/bench.toml" "$work/uring.toml"
                   printf '[dtmf]\ninband = "auto"\n' >>"$work/uring.toml" ;;
      build=*) cp "$work/bench.toml" "$work/uring.toml"; second_bin=${second#build=}
               second=other_build ;;
      *) echo "FLOOR_SECOND: uring, inband-auto or build=PATH" >&2; exit 2 ;;
    esac
    start_server "$work/uring.toml" "$uring_port" 45000-59999 uring "$second_bin"
    uring_server=$started
    echo "cores=$(nproc) calls=$calls user=$user date=$(date -u +%F) steady_state_s=$secs"
    for r in $(seq 1 "$rounds"); do
      s=$(per_leg "$port" "$server")
      u=$(per_leg "$uring_port" "$uring_server")
      f=$(per_leg "$floor_port" "$far_pid")
      echo "round $r: sockets_pct_of_a_core_per_leg=$s $second=$u floor=$f" \
        "ratio_sockets=$(echo "$s / $f" | bc -l | cut -c1-5) ratio_$second=$(echo "$u / $f" | bc -l | cut -c1-5)"
    done
    echo "sockets: $(grep "media workers" "$work/server.log" | tail -1)"
    echo "$second: $(grep "media workers" "$work/uring.log" | tail -1)"
    ;;
  idle)
    calls=${2:-1000}; hold=${3:-20000}
    sipp 127.0.0.1:$port -sf benches/sipp/call_rate.xml -s echo -i 127.0.0.1 -p 25070 \
      -r 500 -m "$calls" -l "$calls" -d "$hold" -nostdin -timeout 120s -bg >/dev/null 2>&1 || true
    sleep $(( calls / 500 + 35 ))  # all calls up, their INVITE transactions expired (64·T1)
    held=$(rss)
    echo "cores=$(nproc) idle_calls=$calls rss_before_kib=$base rss_with_calls_kib=$held"
    echo "per_dialog_bytes=$(( (held - base) * 1024 / calls ))"
    pkill -f "sipp 127.0.0.1:$port" || true
    ;;
esac
