#!/bin/bash
# Session-layer scenarios on the two-uplink test bed (scripts/testbed.sh):
# both ends preloaded with RESIL_SESSION, the active path blackholed (or
# its link taken down) mid-transfer, real programs.
#
#   tests/net/session.sh BUILD_DIR
#
# One line per check; the last line is "session: N passed, M failed"; exit
# status non-zero on any failure. Needs root. Fails (never skips) when the
# test bed cannot be built. libresil's configuration goes only into the
# environment of the programs under test.

set -u
BUILD=${1:?usage: tests/net/session.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB=$(cd "$BUILD" 2>/dev/null && pwd)/libresil.so
PY=/usr/bin/python3

PASS=0
FAIL=0
pass() { PASS=$((PASS + 1)); echo "PASS  $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL  $*"; }
info() { echo "INFO  $*"; }
check() { if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2"; fi; }
now_ms() { local t=$EPOCHREALTIME; echo $(( ${t/./} / 1000 )); }
fmt_s() { printf "%d.%02d s" $(($1 / 1000)) $(($1 % 1000 / 10)); }

if [ ! -f "$LIB" ]; then
    fail "setup: $BUILD/libresil.so not found (run make)"
    echo "session: $PASS passed, $FAIL failed"; exit 1
fi

# shellcheck source=../../scripts/testbed.sh
. "$ROOT/scripts/testbed.sh"

WORK=$(mktemp -d /tmp/resil-session.XXXXXX)
FINISHED=0
on_exit() {
    local rc=$?
    tb_down
    if [ $FINISHED = 0 ]; then
        FAIL=$((FAIL + 1))
        echo "FAIL  run aborted (exit $rc); logs kept in $WORK"
        echo "session: $PASS passed, $FAIL failed"
        exit 1
    fi
    [ "$FAIL" -eq 0 ] && rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TB_QUIET=1 TB_NO_TRAP=1
tb_up
info "bed $TB_ID: $TB_C/$TB_S, server addresses $TB_ADDRS"

P_STREAM=7400 P_REDIS=7401 P_PLAIN=7402
SESS="*:$P_STREAM,*:$P_REDIS"
# the environment of a preloaded program of either end
pre() { # TAG: env assignments for a preloaded run whose logs go to WORK/TAG
    echo LD_PRELOAD="$LIB" RESIL_SESSION="$SESS" RESIL_LOG_LEVEL=info \
        RESIL_LOG_FILE="$WORK/$1.log" RESIL_EVENTS="$WORK/$1.ev" \
        RESIL_FAIL_TIMEOUT_MS=3000
}

# servers: preloaded (session) and plain, same program
# shellcheck disable=SC2046
tb_bg_s env $(pre srv-stream) PACE_MS=50 "$PY" "$HERE/stream.py" serve \
    $P_STREAM >"$WORK/srv-stream.out" 2>&1
tb_bg_s env PACE_MS=50 "$PY" "$HERE/stream.py" serve $P_PLAIN \
    >"$WORK/srv-plain.out" 2>&1
ready=1
for i in $(seq 50); do
    ready=1
    for p in $P_STREAM $P_PLAIN; do
        tb_c "$PY" -c "import socket,sys; socket.create_connection(('$TB_FIRST4',$p),1).close()" \
            2>/dev/null || ready=0
    done
    [ $ready = 1 ] && break
    sleep 0.2
done
check $((1 - ready)) "bed: stream servers answer (session port $P_STREAM, plain $P_PLAIN)"

# Which server address a client connection is on: its "peer" line.
peer_of() { sed -n 's/^peer \(.*\)/\1/p' "$1" | head -n1 | sed 's/^::ffff://'; }

# stream_case TAG DIR MIB HOW [pre|plain]: a verified stream of MIB MiB in
# DIR (send: client to server, recv: server to client, both), the path it
# uses broken 1 s in (HOW: blackhole|linkdown). Sets RC, MS, FAILOVER_MS.
stream_case() {
    local tag=$1 dir=$2 mib=$3 how=$4 mode=${5:-pre} port=$P_STREAM envs=()
    [ "$mode" = plain ] && port=$P_PLAIN
    # shellcheck disable=SC2207
    [ "$mode" = pre ] && envs=($(pre "$tag"))
    local t0 tb pa
    t0=$(now_ms)
    local tmo=40
    [ "$mode" = plain ] && tmo=8
    tb_c timeout $tmo env "${envs[@]}" PACE_MS=50 "$PY" "$HERE/stream.py" \
        client "$TB_FIRST4" "$port" "$dir" "$mib" >"$WORK/$tag.out" 2>&1 &
    local pid=$!
    sleep 1
    pa=$(peer_of "$WORK/$tag.out")
    tb=$(now_ms)
    if [ "$how" = linkdown ]; then
        tb_link_down "$(tb_uplink_of "$pa")" 2>/dev/null
    else
        tb_blackhole_addr "$pa" 2>/dev/null
    fi
    wait $pid
    RC=$?
    MS=$(( $(now_ms) - t0 ))
    tb_heal 2>/dev/null
    FAILOVER_MS=$(awk -v tb="$tb" '$1 == "resume" { print $2 - tb; exit }' \
        "$WORK/$tag.out" 2>/dev/null)
}

echo "--- verified streams, the active path broken mid-transfer"
for dir in send recv; do
    stream_case "s-$dir" $dir 64 blackhole
    ok=1
    grep -q "^ok client $dir 64" "$WORK/s-$dir.out" && [ "$RC" = 0 ] && ok=0
    ev=$(grep -c '"event":"resume"' "$WORK"/s-$dir.ev "$WORK"/srv-stream.ev \
        2>/dev/null | awk -F: '{ n += $2 } END { print n + 0 }')
    check $ok "stream $dir 64 MiB, path blackholed: complete and verified (exit $RC after $(fmt_s "$MS"), $ev resume event(s)) $(grep FAIL "$WORK/s-$dir.out" | head -1)"
done
stream_case s-plain send 64 blackhole plain
check $([ "$RC" != 0 ] && echo 0 || echo 1) \
    "stream send without libresil: fails or hangs (exit $RC after $(fmt_s "$MS"))"

FINISHED=1
echo "session: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
