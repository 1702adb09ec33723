#!/bin/bash
# libresil before/after demo on the two-uplink test bed (make demo).
#
#   scripts/demo.sh BUILD_DIR
#
# Builds the test bed, makes the switch behind uplink 1 die silently (the
# first address getaddrinfo returns, and the first IPv4 address, which
# programs that look up IPv4 only try first), then runs unmodified programs
# without libresil (timeout 10) and with it, and a request/response stream
# whose path dies mid-stream, and a verified stream between two programs
# both run under libresil (the session layer) whose uplink dies mid-stream.
# Prints a before/after table.  ~50 s; needs
# root; cleans up after itself.

set -u
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB=$(cd "$BUILD" 2>/dev/null && pwd)/libresil.so
PY=/usr/bin/python3
NET=$ROOT/tests/net
[ -f "$LIB" ] || { echo "demo: $BUILD/libresil.so not found (run make)" >&2; exit 1; }

# shellcheck source=testbed.sh
. "$ROOT/scripts/testbed.sh"
WORK=$(mktemp -d /tmp/resil-demo.XXXXXX)
TB_QUIET=1
tb_up
trap 'tb_down; rm -rf "$WORK"' EXIT

now_ms() { local t=$EPOCHREALTIME; echo $(( ${t/./} / 1000 )); }
fmt_s() { printf "%d.%02d s" $(($1 / 1000)) $(($1 % 1000 / 10)); }

mkdir -p "$WORK/www" && echo hello >"$WORK/www/index.html"
tb_bg_s "$PY" "$NET/servers.py" echo 7000 >/dev/null 2>&1
tb_bg_s "$PY" -m http.server --bind :: --directory "$WORK/www" 8080 >/dev/null 2>&1
tb_bg_s redis-server --port 6379 --bind "$TB_ADDRS" --protected-mode no \
    --save '' --appendonly no --daemonize no --dir "$WORK" >/dev/null 2>&1
for i in $(seq 50); do
    tb_c "$PY" -c "import socket
for a in '$TB_ADDRS'.split():
    for p in (7000, 8080, 6379): socket.create_connection((a, p), 1).close()" 2>/dev/null && break
    sleep 0.2
    [ "$i" = 50 ] && { echo "demo: servers did not come up" >&2; exit 1; }
done

U1="$(tb_srv_addr6 1) $(tb_srv_addr4 1)"
echo "libresil demo: server svc.resil.test has 4 addresses on 2 uplinks:"
echo "  $TB_ADDRS"
echo "getaddrinfo's first address is $TB_FIRST (first IPv4: $TB_FIRST4)."
echo "Uplink 1 ($U1) now silently drops every packet (no RST, no ICMP)."
tb_blackhole_uplink 1 2>/dev/null
echo

NAMES=("python create_connection" "curl" "redis-cli PING")
CMDS=(
    "$PY -c 'import socket; s=socket.create_connection((\"svc.resil.test\",7000)); s.sendall(b\"hi\"); assert s.recv(2)==b\"hi\"'"
    "curl -sS -o /dev/null http://svc.resil.test:8080/"
    "redis-cli -h svc.resil.test PING"
)

# run TAG BOUND with|without CMD -> $WORK/TAG.res = "rc ms"
run() {
    local tag=$1 bound=$2 mode=$3 cmd=$4 pre="" t0 rc
    [ "$mode" = with ] && pre="env LD_PRELOAD=$LIB RESIL_EVENTS=$WORK/$tag.ev"
    t0=$(now_ms)
    timeout "$bound" ip netns exec "$TB_C" bash -c "exec $pre $cmd" </dev/null >"$WORK/$tag.out" 2>&1
    rc=$?
    echo "$rc $(( $(now_ms) - t0 ))" >"$WORK/$tag.res"
}
verdict() { # TAG -> text
    local rc ms
    read -r rc ms <"$WORK/$1.res"
    case $rc in
        0) echo "ok in $(fmt_s "$ms")" ;;
        124) echo "hung, killed at $(fmt_s "$ms")" ;;
        *) echo "failed (exit $rc) after $(fmt_s "$ms")" ;;
    esac
}
winner() { grep -o '"winner":"[^"]*"' "$WORK/$1.ev" 2>/dev/null | tail -n1 | sed 's/.*:"//; s/"$//'; }

echo "connecting (the runs without libresil are given 10 s) ..."
pids=()
for i in "${!CMDS[@]}"; do
    run "p$i-without" 10 without "${CMDS[$i]}" &
    pids+=($!)
done
for i in "${!CMDS[@]}"; do run "p$i-with" 10 with "${CMDS[$i]}"; done
wait "${pids[@]}"

# Mid-stream: a python request/response loop over a healthy path (uplink 1),
# then uplink 1 dies.  libresil bound: RESIL_FAIL_TIMEOUT_MS=3000.
tb_heal 2>/dev/null
echo "mid-stream: request/response loops on a healthy path, then it dies (12 s bound) ..."
for m in with without; do
    pre=()
    [ $m = with ] && pre=(env LD_PRELOAD="$LIB" RESIL_FAIL_TIMEOUT_MS=3000
                          RESIL_EVENTS="$WORK/ms-$m.ev")
    timeout 30 ip netns exec "$TB_C" "${pre[@]}" "$PY" "$NET/client.py" busy svc.resil.test 7000 \
        >"$WORK/ms-$m.out" 2>&1 &
    eval "MS_PID_$m=$!"
done
for i in $(seq 50); do
    grep -q '^peer' "$WORK/ms-with.out" && grep -q '^peer' "$WORK/ms-without.out" && break
    sleep 0.1
done
sleep 1
for m in with without; do
    pa=$(awk '$1=="peer"{print $2; exit}' "$WORK/ms-$m.out"); pa=${pa#::ffff:}
    u=$(tb_uplink_of "$pa"); [ "$u" != 0 ] && tb_blackhole_uplink "$u" 2>/dev/null
done
T_BH=$(now_ms)
while [ $(( $(now_ms) - T_BH )) -lt 12000 ]; do
    grep -qE '^(error|eof)' "$WORK/ms-with.out" && grep -qE '^(error|eof)' "$WORK/ms-without.out" && break
    sleep 0.2
done
ms_verdict() {
    local l t
    l=$(grep -m1 -E '^(error|eof)' "$WORK/ms-$1.out")
    if [ -z "$l" ]; then echo "still hanging after 12 s"; return; fi
    t=${l##* }
    echo "${l% *} after $(fmt_s $(( ${t/./} - T_BH )))" | sed 's/^error //'
}
MS_WITH=$(ms_verdict with) MS_WITHOUT=$(ms_verdict without)
kill "$MS_PID_with" "$MS_PID_without" 2>/dev/null
wait "$MS_PID_with" "$MS_PID_without" 2>/dev/null

# Session layer: a verified stream (tests/net/stream.py: 64-bit counters,
# a lost, duplicated or reordered byte is caught where it happens) from a
# server to a client, both under libresil with RESIL_SESSION; its uplink
# dies 1 s in.  Without libresil the same programs, 15 s bound.
tb_heal 2>/dev/null
echo "session: a 32 MiB verified stream, both ends under libresil, its uplink dies 1 s in (15 s bound) ..."
SESS_ENV=(LD_PRELOAD="$LIB" RESIL_SESSION="*:7400")
tb_bg_s env "${SESS_ENV[@]}" PACE_MS=50 "$PY" "$NET/stream.py" serve 7400 >/dev/null 2>&1
tb_bg_s env PACE_MS=50 "$PY" "$NET/stream.py" serve 7500 >/dev/null 2>&1
for i in $(seq 50); do
    tb_c "$PY" -c "import socket
for p in (7400, 7500): socket.create_connection(('$TB_FIRST4', p), 1).close()" 2>/dev/null && break
    sleep 0.2
done
for m in with without; do
    pre=() port=7500
    [ $m = with ] && pre=(env "${SESS_ENV[@]}" RESIL_EVENTS="$WORK/ss-$m.ev") port=7400
    t0=$(now_ms)
    timeout 15 ip netns exec "$TB_C" "${pre[@]}" env PACE_MS=50 "$PY" \
        "$NET/stream.py" client "$TB_FIRST4" $port recv 32 >"$WORK/ss-$m.out" 2>&1 &
    pid=$!
    sleep 1
    pa=$(sed -n 's/^peer \(.*\)/\1/p' "$WORK/ss-$m.out" | head -n1); pa=${pa#::ffff:}
    u=$(tb_uplink_of "$pa"); [ "$u" != 0 ] && tb_blackhole_uplink "$u" 2>/dev/null
    wait $pid
    echo "$? $(( $(now_ms) - t0 ))" >"$WORK/ss-$m.res"
    tb_heal 2>/dev/null
done
ss_verdict() {
    local rc ms
    read -r rc ms <"$WORK/ss-$1.res"
    case $rc in
        0) echo "verified, $(fmt_s "$ms")" ;;
        124) echo "hung, killed at $(fmt_s "$ms")" ;;
        *) echo "failed (exit $rc) after $(fmt_s "$ms")" ;;
    esac
}
SS_WITH=$(ss_verdict with) SS_WITHOUT=$(ss_verdict without)
SS_N=$(grep -c '"event":"resume"' "$WORK/ss-with.ev" 2>/dev/null)

echo
fmt="%-26s | %-24s | %-24s | %s\n"
printf "$fmt" "program" "without libresil" "with libresil" "winner"
printf "$fmt" "--------------------------" "------------------------" "------------------------" "-------------"
for i in "${!CMDS[@]}"; do
    printf "$fmt" "${NAMES[$i]}" "$(verdict "p$i-without")" "$(verdict "p$i-with")" "$(winner "p$i-with")"
done
printf "$fmt" "mid-stream: path dies" "$MS_WITHOUT" "$MS_WITH" "(bound 3 s)"
printf "$fmt" "session: uplink dies" "$SS_WITHOUT" "$SS_WITH" "(${SS_N:-0} resume(s))"
echo
echo "winner = the address libresil's race connected to (uplink 1 was dead)."
echo "session: both programs under libresil with RESIL_SESSION; the stream is"
echo "checked byte by byte (no loss, duplicate or reordering) and the client's"
echo "connection carried on over uplink 2 without the programs noticing."
