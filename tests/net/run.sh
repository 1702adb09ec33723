#!/bin/bash
# Network scenarios for libresil on the two-uplink test bed
# (scripts/testbed.sh), with unmodified programs: python, nc, curl,
# redis-cli, socat, psql (PostgreSQL).
#
#   tests/net/run.sh BUILD_DIR
#
# One line per check; the last line is "net: N passed, M failed"; exit status
# non-zero on any failure.  INFO lines are measurements that are not checks.
# Needs root.  Fails (never skips) when the test bed cannot be built.
#
# libresil's configuration goes only into the environment of the program
# under test (env ... PROGRAM), never into this shell.

set -u
BUILD=${1:?usage: tests/net/run.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB=$(cd "$BUILD" 2>/dev/null && pwd)/libresil.so
PY=/usr/bin/python3
T_START=$EPOCHREALTIME

finish() {
    local total=$(( ($(now_ms) - ${T_START/./} / 1000) ))
    FINISHED=1
    echo "net: total time $((total / 1000)).$(printf %03d $((total % 1000))) s"
    [ "$FAIL" -eq 0 ] || echo "net: logs kept in $WORK"
    echo "net: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}

SUITE=net
# shellcheck source=harness.sh
. "$HERE/harness.sh"

fmt_s() { printf "%d.%02d s" $(($1 / 1000)) $(($1 % 1000 / 10)); }

# ---------------------------------------------------------------- bed
# tb_up exits (FATAL message) when the bed cannot be built: on_exit then
# counts the failure.
TB_QUIET=1 TB_NO_TRAP=1
tb_up
info "bed $TB_ID: $TB_C/$TB_S; getaddrinfo order first $TB_FIRST (first v4 $TB_FIRST4, first v6 $TB_FIRST6)"

P_ECHO=7000 P_HTTP=8080 P_REDIS=6379 P_STREAM=7100 P_SINK=7200 P_BANNER=7300
mkdir -p "$WORK/www" && echo hello >"$WORK/www/index.html"
tb_bg_s "$PY" "$HERE/servers.py" echo $P_ECHO >"$WORK/srv-echo.log" 2>&1
tb_bg_s "$PY" "$HERE/servers.py" echo $P_STREAM >"$WORK/srv-stream.log" 2>&1
tb_bg_s "$PY" "$HERE/servers.py" sink $P_SINK "$WORK/sink.go" >"$WORK/srv-sink.log" 2>&1
tb_bg_s "$PY" "$HERE/servers.py" banner $P_BANNER "$WORK/banner.go" >"$WORK/srv-banner.log" 2>&1
tb_bg_s "$PY" -m http.server --bind :: --directory "$WORK/www" $P_HTTP >"$WORK/srv-http.log" 2>&1
tb_bg_s redis-server --port $P_REDIS --bind "$TB_ADDRS" --protected-mode no \
    --save '' --appendonly no --daemonize no --dir "$WORK" >"$WORK/srv-redis.log" 2>&1

# PostgreSQL for scenario i: a throw-away cluster owned by the postgres
# user, listening on the four server addresses, trust for the bed's
# networks; initdb runs in the background while the other scenarios do.
P_PG=5432
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
chmod 711 "$WORK"
mkdir -p "$WORK/pg" && chown postgres: "$WORK/pg"
(
    runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -A trust \
        -U postgres --no-sync >"$WORK/pg-initdb.log" 2>&1 || exit 1
    printf 'host all all 10.231.0.0/16 trust\nhost all all fd00:231::/32 trust\n' \
        >>"$WORK/pg/data/pg_hba.conf"
    exec ip netns exec "$TB_S" runuser -u postgres -- "$PGBIN/postgres" \
        -D "$WORK/pg/data" -c listen_addresses="${TB_ADDRS// /,}" \
        -c port=$P_PG -c unix_socket_directories="$WORK/pg" -c fsync=off
) >"$WORK/srv-pg.log" 2>&1 &
disown $! # tb_down ends it; no "Killed" notice then

# Every server address answers on every port (plain TCP, no libresil).
bed_ok=1
for i in $(seq 50); do
    bed_ok=1
    for a in $TB_ADDRS; do
        for p in $P_ECHO $P_HTTP $P_REDIS $P_STREAM $P_SINK $P_BANNER; do
            tb_c "$PY" -c "import socket,sys; socket.create_connection((sys.argv[1],int(sys.argv[2])),1).close()" \
                "$a" "$p" 2>/dev/null || { bed_ok=0; break 2; }
        done
    done
    [ $bed_ok = 1 ] && break
    sleep 0.2
done
check $((1 - bed_ok)) "bed: all 4 server addresses answer on ports $P_ECHO $P_HTTP $P_REDIS $P_STREAM $P_SINK $P_BANNER"
if [ $bed_ok = 0 ]; then
    echo "net: test bed servers not reachable; giving up" >&2
    finish; exit
fi
n_dns=$(tb_c "$PY" -c "
import socket
print(len({a[4][0] for a in socket.getaddrinfo('$TB_ONE', 1, 0, socket.SOCK_STREAM)}))")
check $([ "$n_dns" = 1 ] && echo 0 || echo 1) "bed: hosts file gives $TB_ONE one address ($n_dns)"

# ---------------------------------------------------------------- programs
# prog_cmd PROG NAME: sets CMD (array), IN (stdin text or empty), EXPECT
# (a line the output must contain; empty: exit status 0 is enough).
prog_cmd() {
    local name=$2
    IN="" EXPECT=""
    case $1 in
        python) CMD=("$PY" -c "import socket,sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b'hi\n'); print(s.recv(10).decode().strip())" "$name" $P_ECHO)
                EXPECT=hi ;;
        nc-z-w) CMD=(nc -z -w 20 "$name" $P_ECHO) ;;
        nc) CMD=(nc -N "$name" $P_ECHO); IN=hi; EXPECT=hi ;;
        curl) CMD=(curl -sS -o /dev/null -w '%{http_code}\n' "http://$name:$P_HTTP/"); EXPECT=200 ;;
        redis-cli) CMD=(redis-cli -h "$name" -p $P_REDIS PING); EXPECT=PONG ;;
        socat) CMD=(socat - "TCP:$name:$P_ECHO"); IN=hi; EXPECT=hi ;;
    esac
}
PROGS="python nc-z-w nc curl redis-cli socat"

# Does PROG, run without libresil, try a dead address first and hang?
#   python, nc: the first getaddrinfo address.
#   redis-cli (hiredis asks getaddrinfo for AF_INET first; for the hosts-only
#     name glibc then asks DNS, which knows all addresses): the first IPv4.
#   socat 1.7 (AF_UNSPEC lookup, takes the first IPv4 result if any): the
#     first IPv4, or the only (IPv6) address of the hosts-only name.
#   curl (Happy Eyeballs across families): only if the first of both die.
expect_hang() { # PROG DEADLIST NAME
    local dead=" $2 "
    case $1 in
        redis-cli) [[ $dead == *" $TB_FIRST4 "* ]] ;;
        socat) [ "$3" = "$TB_ONE" ] || [[ $dead == *" $TB_FIRST4 "* ]] ;;
        curl) [ "$3" = "$TB_ONE" ] ||
              { [[ $dead == *" $TB_FIRST4 "* ]] && [[ $dead == *" $TB_FIRST6 "* ]]; } ;;
        *) [[ $dead == *" $TB_FIRST "* ]] ;;
    esac
}

# run_prog TAG BOUND_S with|without PROG NAME [VAR=VALUE...]
# Writes $WORK/TAG.{out,res,ev,log}; res = "rc ms".
run_prog() {
    local tag=$1 bound=$2 mode=$3 prog=$4 name=$5
    shift 5
    local pre=()
    prog_cmd "$prog" "$name"
    rm -f "$WORK/$tag.ev"
    if [ "$mode" = with ]; then
        pre=(env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/$tag.ev"
             RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/$tag.log" "$@")
    fi
    local t0 t1 rc
    t0=$(now_ms)
    if [ -n "$IN" ]; then
        printf '%s\n' "$IN" | timeout "$bound" ip netns exec "$TB_C" "${pre[@]}" "${CMD[@]}" >"$WORK/$tag.out" 2>&1
    else
        timeout "$bound" ip netns exec "$TB_C" "${pre[@]}" "${CMD[@]}" </dev/null >"$WORK/$tag.out" 2>&1
    fi
    rc=$?
    t1=$(now_ms)
    echo "$rc $((t1 - t0))" >"$WORK/$tag.res"
}

# Winners of the connect races recorded in an events file (one per line).
winners() { grep -o '"winner":"[^"]*"' "$1" 2>/dev/null | sed 's/.*:"//; s/"$//' | sort -u | tr '\n' ' '; }

# eval_with TAG SCEN PROG LIMIT_MS DEADLIST
eval_with() {
    local tag=$1 scen=$2 prog=$3 limit=$4 dead=" $5 " rc ms w ok=0 why=""
    read -r rc ms <"$WORK/$tag.res"
    prog_cmd "$prog" x
    w=$(winners "$WORK/$tag.ev")
    if [ "$rc" != 0 ]; then ok=1; why="exit $rc: $(head -c 200 "$WORK/$tag.out" | tr '\n' ' ')"
    elif [ -n "$EXPECT" ] && ! grep -qx "$EXPECT" "$WORK/$tag.out"; then
        ok=1; why="output $(head -c 100 "$WORK/$tag.out" | tr '\n' ' ')"
    elif [ "$ms" -ge "$limit" ]; then ok=1; why="too slow"
    elif [ -z "$w" ]; then ok=1; why="no connect event"
    else
        for a in $w; do [[ $dead == *" $a "* ]] && { ok=1; why="winner $a is dead"; }; done
    fi
    check $ok "$scen $prog: with libresil connects in $(fmt_s "$ms") (< $(fmt_s "$limit")), winner ${w:-none}${why:+ -- $why}"
}

# eval_without TAG SCEN PROG DEADLIST NAME  (run with timeout 6)
# In scenario d (link down) the kernel reports EHOSTUNREACH once ARP/ND
# fail (~3 s), so the baselines there are measurements, not checks.
eval_without() {
    local tag=$1 scen=$2 prog=$3 dead=$4 name=$5 rc ms
    read -r rc ms <"$WORK/$tag.res"
    if [ "$scen" = d ]; then
        info "$scen $prog: without libresil exit $rc after $(fmt_s "$ms")"
    elif expect_hang "$prog" "$dead" "$name"; then
        check $([ "$rc" = 124 ] && [ "$ms" -ge 5000 ] && echo 0 || echo 1) \
            "$scen $prog: without libresil still not done after 5 s (exit $rc after $(fmt_s "$ms"))"
    else
        info "$scen $prog: without libresil exit $rc after $(fmt_s "$ms") (its first address is alive)"
    fi
}

# scenario SCEN NAME LIMIT_MS DEADLIST [VAR=VALUE...]: all programs, the
# baselines (timeout 6) in parallel with the libresil runs.
scenario() {
    local scen=$1 name=$2 limit=$3 dead=$4 prog pids=()
    shift 4
    for prog in $PROGS; do
        run_prog "$scen-$prog-without" 6 without "$prog" "$name" &
        pids+=($!)
    done
    for prog in $PROGS; do
        run_prog "$scen-$prog-with" 10 with "$prog" "$name" "$@"
        eval_with "$scen-$prog-with" "$scen" "$prog" "$limit" "$dead"
    done
    wait "${pids[@]}"
    for prog in $PROGS; do
        eval_without "$scen-$prog-without" "$scen" "$prog" "$dead" "$name"
    done
}

# ------------------------------------------------ a. first address dead
echo "--- a: first address $TB_FIRST blackholed"
tb_blackhole_addr "$TB_FIRST" 2>/dev/null
# negative control: libresil loaded but racing off behaves like plain TCP
run_prog a-python-race0 6 with python "$TB_NAME" RESIL_RACE=0 &
NPID=$!
scenario a "$TB_NAME" 1000 "$TB_FIRST"
wait $NPID
read -r rc ms <"$WORK/a-python-race0.res"
check $([ "$rc" = 124 ] && echo 0 || echo 1) \
    "a python: with libresil and RESIL_RACE=0 still not done after 5 s (exit $rc after $(fmt_s "$ms"))"
tb_heal 2>/dev/null

# ------------------------------------------------ b. whole uplink 1 dead
U1="$(tb_srv_addr4 1) $(tb_srv_addr6 1)"
echo "--- b: uplink 1 ($U1) blackholed"
tb_blackhole_uplink 1 2>/dev/null
scenario b "$TB_NAME" 1000 "$U1"
tb_heal 2>/dev/null

# ------------------------------------------------ c. late DNS answers join
echo "--- c: $TB_ONE (hosts: only $TB_FIRST, DNS: all four), $TB_FIRST blackholed, RESIL_DNS=1"
tb_blackhole_addr "$TB_FIRST" 2>/dev/null
# negative control: without the DNS refresh the hosts-only name has one
# address, so nothing can rescue the connect
run_prog c-python-dns0 6 with python "$TB_ONE" RESIL_DNS=0 &
NPID=$!
scenario c "$TB_ONE" 2000 "$TB_FIRST" RESIL_DNS=1
wait $NPID
read -r rc ms <"$WORK/c-python-dns0.res"
check $([ "$rc" = 124 ] && echo 0 || echo 1) \
    "c python: with libresil and RESIL_DNS=0 still not done after 5 s (exit $rc after $(fmt_s "$ms")): the rescue came from DNS"
tb_heal 2>/dev/null

# ------------------------------------------------ d. link down
echo "--- d: uplink 1 link down (server end)"
tb_link_down 1 2>/dev/null
scenario d "$TB_NAME" 2000 "$U1"
tb_heal 2>/dev/null

# After the link comes back, every address answers again.
heal_ok=0
for i in $(seq 50); do
    if tb_c "$PY" -c "
import socket,sys
for a in sys.argv[1:]: socket.create_connection((a, $P_STREAM), 1).close()" $TB_ADDRS 2>/dev/null
    then heal_ok=1; break; fi
    sleep 0.1
done
check $((1 - heal_ok)) "bed: tb_heal restores all 4 addresses"

# ------------------------------------------------ e/f. mid-stream failure
# Four clients at once on healthy paths: busy and idle, with and without
# libresil (RESIL_FAIL_TIMEOUT_MS=3000); then the uplink they use is
# blackholed.  With libresil: an error within 8 s.  Without: still hanging
# after 15 s.
BOUND=3000
# A live address on the other uplink, for the side connections of the
# "poke" clients: another connect in the process wakes libresil's engine
# thread (see the INFO line they produce).
POKE="--poke=$(tb_srv_addr4 $((3 - $(tb_uplink_of "$TB_FIRST")))),$P_ECHO"
echo "--- e/f: mid-stream dead path, RESIL_FAIL_TIMEOUT_MS=$BOUND"
declare -A CPID
CLIENTS="busy-with busy-without idle-with idle-without busypoke-with"
for c in $CLIENTS; do
    tag=ef-$c kind=${c%-*} mode=${c#*-} extra=()
    pre=()
    [ $mode = with ] && pre=(env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/$tag.ev"
        RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/$tag.log"
        RESIL_FAIL_TIMEOUT_MS=$BOUND)
    [ $kind = busypoke ] && kind=busy extra=("$POKE")
    timeout 40 ip netns exec "$TB_C" "${pre[@]}" "$PY" "$HERE/client.py" \
        $kind "$TB_NAME" $P_STREAM "${extra[@]}" >"$WORK/$tag.out" 2>"$WORK/$tag.err" &
    CPID[$tag]=$!
done
# wait until all are connected (idle ones after their exchange)
ready=0
for i in $(seq 100); do
    ready=1
    for c in $CLIENTS; do
        case $c in
            idle*) grep -q '^idle' "$WORK/ef-$c.out" || ready=0 ;;
            *) grep -q '^peer' "$WORK/ef-$c.out" || ready=0 ;;
        esac
    done
    [ $ready = 1 ] && break
    sleep 0.1
done
check $((1 - ready)) "e/f: clients connected and exchanging"
sleep 1   # some request/response rounds on the healthy path
dead_up=""
for tag in "${!CPID[@]}"; do
    pa=$(awk '$1=="peer"{print $2; exit}' "$WORK/$tag.out")
    u=$(tb_uplink_of "${pa#::ffff:}")
    [ "$u" = 0 ] && continue
    [[ " $dead_up " == *" $u "* ]] || dead_up="$dead_up $u"
done
for u in $dead_up; do tb_blackhole_uplink "$u" 2>/dev/null; done
T_BH=$(now_ms)
info "e/f: blackholed uplink(s)$dead_up at t=0"

# end_line TAG: first line saying how a client ended
end_line() { grep -m1 -E '^(error|eof|data|ok|mismatch)' "$WORK/$1.out"; }

# with libresil: wait for an end, up to 12 s
for c in $CLIENTS; do
    [[ $c == *-with ]] || continue
    while [ $(( $(now_ms) - T_BH )) -lt 12000 ] && [ -z "$(end_line ef-$c)" ]; do sleep 0.1; done
done
for c in $CLIENTS; do
    [[ $c == *-with ]] || continue
    tag=ef-$c kind=${c%-*}
    scen=e; [ $kind = idle ] && scen=f
    desc="$scen $kind"
    [ $kind = busypoke ] && desc="e busy, other connects in the process"
    l=$(end_line $tag)
    if [ -n "$l" ]; then
        set -- $l
        t_end=${!#}          # unix time with 3 decimals
        ms=$((${t_end/./} - T_BH))
        what=$1; [ "$1" = error ] && what="$1 $2"
        ok=1
        case "$1 ${2:-}" in
            "error ETIMEDOUT"*|"error ECONNRESET"*|"error EPIPE"*|"error ECONNABORTED"*|"error EHOSTUNREACH"*|"error timeout"*)
                [ $ms -le 8000 ] && ok=0 ;;
        esac
        check $ok "$desc: with libresil the program gets '$what' $(fmt_s $ms) after the blackhole (<= 8 s)"
    else
        fail "$desc: with libresil no error within 12 s of the blackhole"
    fi
    info "$desc events: $(grep -o '"event":"[^"]*"' "$WORK/$tag.ev" 2>/dev/null | sed 's/"event"://' | sort | uniq -c | tr -s ' \n' ' ')"
done
# without libresil: still hanging 15 s after the blackhole
while [ $(( $(now_ms) - T_BH )) -lt 15000 ]; do sleep 0.2; done
for c in $CLIENTS; do
    [[ $c == *-without ]] || continue
    tag=ef-$c kind=${c%-*}
    scen=e; [ $kind = idle ] && scen=f
    l=$(end_line $tag)
    if [ -z "$l" ] && kill -0 "${CPID[$tag]}" 2>/dev/null; then
        pass "$scen $kind: without libresil still hanging 15 s after the blackhole"
    else
        fail "$scen $kind: without libresil ended: ${l:-exited}"
    fi
done
for tag in "${!CPID[@]}"; do kill "${CPID[$tag]}" 2>/dev/null; done
wait "${CPID[@]}" 2>/dev/null
tb_heal 2>/dev/null

# ------------------------------------------------ e. peer stops reading
# The server accepts and reads nothing; the client writes 32 MiB until its
# send blocks (zero window).  libresil must not kill that healthy connection
# for 2x the bound; then the server reads and every byte must arrive intact.
# Run twice: plain, and with side connects that keep libresil's engine (and
# so its stall monitor) awake.
sink_test() { # LABEL [--poke=...]
    local label=$1 tag=e-sink${2:-} last="" still=0 blocked=0 sent l src i
    tag=${tag//[^a-z0-9-]/}
    echo "--- e: live peer that stops reading$label, RESIL_FAIL_TIMEOUT_MS=$BOUND"
    rm -f "$WORK/sink.go"
    timeout 60 ip netns exec "$TB_C" env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/$tag.ev" \
        RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/$tag.log" RESIL_FAIL_TIMEOUT_MS=$BOUND \
        "$PY" "$HERE/client.py" sink "$TB_NAME" $P_SINK $((32 << 20)) ${2:+"$2"} \
        >"$WORK/$tag.out" 2>"$WORK/$tag.err" &
    local spid=$!
    # wait for the send to block: no progress for 1 s
    for i in $(seq 100); do
        sleep 0.1
        cur=$(grep '^sent' "$WORK/$tag.out" 2>/dev/null | tail -n1 | cut -d' ' -f2)
        if [ -n "$cur" ] && [ "$cur" = "$last" ]; then
            still=$((still + 1)); [ $still -ge 10 ] && { blocked=1; break; }
        else still=0; fi
        last=$cur
    done
    sent=$(awk '$1=="sent"{n=$2} END{print n+0}' "$WORK/$tag.out")
    check $([ $blocked = 1 ] && [ "$sent" -lt $((32 << 20)) ] && echo 0 || echo 1) \
        "e stalled reader$label: client's send blocked after $((sent >> 10)) KiB of 32768 KiB"
    local t_blk hold=$((2 * BOUND + 1000))
    t_blk=$(now_ms)
    while [ $(( $(now_ms) - t_blk )) -lt $hold ]; do
        [ -n "$(end_line $tag)" ] && break
        kill -0 $spid 2>/dev/null || break
        sleep 0.2
    done
    l=$(end_line $tag)
    if [ -z "$l" ] && kill -0 $spid 2>/dev/null; then
        pass "e stalled reader$label: connection alive $(fmt_s $hold) into the zero window (2x bound + 1 s)"
    else
        fail "e stalled reader$label: connection ended while the peer was alive but not reading: ${l:-exited} $(grep -m1 -E 'Error' "$WORK/$tag.err")"
    fi
    touch "$WORK/sink.go"
    wait $spid
    src=$?
    l=$(end_line $tag)
    local msg=${l% *}
    [ -n "$l" ] || msg="exit $src"
    check $([ $src = 0 ] && [[ "$l" == ok* ]] && echo 0 || echo 1) \
        "e stalled reader$label: after the server reads, all 32 MiB arrive intact (sha256): $msg"
    info "e stalled reader$label events: $(grep -o '"event":"[^"]*"' "$WORK/$tag.ev" 2>/dev/null | sed 's/"event"://' | sort | uniq -c | tr -s ' \n' ' ')"
}
sink_test ""
sink_test " (other connects in the process)" "$POKE"

# ------------------------------------------------ g. dies before any byte
# A server that speaks first (SMTP, SSH): the client connects and waits in
# recv() without having sent a byte.  The path dies; keepalive finds it in
# about the bound, and with libresil the connection, having carried nothing,
# is re-raced to a live address inside the blocked recv(): the program then
# reads the banner of the new connection as if nothing happened.  Without
# libresil it waits forever.
echo "--- g: path dies before any byte (server speaks first), RESIL_FAIL_TIMEOUT_MS=$BOUND"
rm -f "$WORK/banner.go"
declare -A GPID
for mode in with without; do
    pre=()
    [ $mode = with ] && pre=(env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/g-$mode.ev"
        RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/g-$mode.log"
        RESIL_FAIL_TIMEOUT_MS=$BOUND)
    timeout 40 ip netns exec "$TB_C" "${pre[@]}" "$PY" "$HERE/client.py" \
        banner "$TB_NAME" $P_BANNER >"$WORK/g-$mode.out" 2>"$WORK/g-$mode.err" &
    GPID[$mode]=$!
done
# netcat-openbsd waits in poll() and closes on POLLERR without reading:
# the readiness hooks must catch the dead socket before it does. socat
# waits in select(). Both then sleep on the replaced socket, which the
# kernel's poll/select would never wake for data on the new one.
G_TOOLS="nc socat"
for tool in $G_TOOLS; do
    case $tool in
        nc) cmd=(nc "$TB_NAME" $P_BANNER) ;;
        socat) cmd=(socat - "TCP:$TB_NAME:$P_BANNER") ;;
    esac
    ( sleep 40 | timeout 40 ip netns exec "$TB_C" env LD_PRELOAD="$LIB" \
          RESIL_EVENTS="$WORK/g-$tool.ev" RESIL_LOG_LEVEL=info \
          RESIL_LOG_FILE="$WORK/g-$tool.log" RESIL_FAIL_TIMEOUT_MS=$BOUND \
          "${cmd[@]}" >"$WORK/g-$tool.out" 2>&1 ) &
    GPID[$tool]=$!
done
ready=0
for i in $(seq 100); do
    grep -q '^peer' "$WORK/g-with.out" && grep -q '^peer' "$WORK/g-without.out" &&
        grep -q '"event":"connect"' "$WORK/g-nc.ev" 2>/dev/null &&
        grep -q '"event":"connect"' "$WORK/g-socat.ev" 2>/dev/null &&
        { ready=1; break; }
    sleep 0.1
done
check $((1 - ready)) "g: both clients connected, waiting for the banner"
dead_up=""
for pa in $(awk '$1=="peer"{print $2; exit}' "$WORK/g-with.out") \
          $(awk '$1=="peer"{print $2; exit}' "$WORK/g-without.out") \
          $(cat "$WORK"/g-nc.ev "$WORK"/g-socat.ev | grep -o '"winner":"[^"]*"' | cut -d'"' -f4); do
    u=$(tb_uplink_of "${pa#::ffff:}")
    [ "$u" = 0 ] || [[ " $dead_up " == *" $u "* ]] || dead_up="$dead_up $u"
done
for u in $dead_up; do tb_blackhole_uplink "$u" 2>/dev/null; done
T_BH=$(now_ms)
touch "$WORK/banner.go"   # from now on the server greets every connection
while [ $(( $(now_ms) - T_BH )) -lt 12000 ] && ! grep -qE '^(banner|error|eof)' "$WORK/g-with.out"; do
    sleep 0.1
done
l=$(grep -m1 -E '^(banner|error|eof)' "$WORK/g-with.out")
ok=1
if [[ "$l" == banner* ]]; then
    set -- $l
    ba=${2#::ffff:}
    ms=$((${3/./} - T_BH))
    [ "$(tb_uplink_of "$ba")" != 0 ] && [[ " $dead_up " != *" $(tb_uplink_of "$ba") "* ]] &&
        grep -q '"event":"rerace"' "$WORK/g-with.ev" && ok=0
    check $ok "g: with libresil the blocked recv() gets the banner of a re-raced connection to $ba $(fmt_s $ms) after the blackhole (rerace event: $(grep -c '"event":"rerace"' "$WORK/g-with.ev"))"
else
    fail "g: with libresil no banner within 12 s: ${l:-nothing}"
fi
for tool in $G_TOOLS; do
    while [ $(( $(now_ms) - T_BH )) -lt 12000 ] && ! grep -q '^banner' "$WORK/g-$tool.out"; do
        sleep 0.1
    done
    if grep -q '^banner' "$WORK/g-$tool.out"; then
        pass "g: $tool gets the banner of a re-raced connection: $(head -1 "$WORK/g-$tool.out") ($(grep -c '"event":"rerace"' "$WORK/g-$tool.ev") rerace event)"
    else
        fail "g: $tool got no banner within 12 s: $(head -c 200 "$WORK/g-$tool.out")"
    fi
done
if ! grep -qE '^(banner|error|eof)' "$WORK/g-without.out" && kill -0 "${GPID[without]}" 2>/dev/null; then
    pass "g: without libresil still waiting 12 s after the blackhole"
else
    fail "g: without libresil ended: $(grep -m1 -E '^(banner|error|eof)' "$WORK/g-without.out")"
fi
for mode in with without $G_TOOLS; do kill "${GPID[$mode]}" 2>/dev/null; done
pkill -f "nc $TB_NAME $P_BANNER" 2>/dev/null
pkill -f "TCP:$TB_NAME:$P_BANNER" 2>/dev/null
wait "${GPID[@]}" 2>/dev/null
tb_heal 2>/dev/null

# ------------------------------------------------ h. reconnect after keepalive
# An idle connection whose address dies: keepalive, sized by libresil, ends
# it with ETIMEDOUT, and the process connects to the name again. That
# address must now be tried last: the reconnect takes no connection attempt
# delay (250 ms) on it.
echo "--- h: reconnect after a keepalive failure, RESIL_FAIL_TIMEOUT_MS=$BOUND"
timeout 40 ip netns exec "$TB_C" env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/h.ev" \
    RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/h.log" RESIL_FAIL_TIMEOUT_MS=$BOUND \
    "$PY" "$HERE/client.py" reconnect "$TB_NAME" $P_ECHO >"$WORK/h.out" 2>"$WORK/h.err" &
HPID=$!
for i in $(seq 100); do grep -q '^idle' "$WORK/h.out" && break; sleep 0.1; done
pa=$(awk '$1=="peer"{print $2; exit}' "$WORK/h.out")
pa=${pa#::ffff:}
if [ -z "$pa" ] || ! grep -q '^idle' "$WORK/h.out"; then
    fail "h: client not connected: $(head -c 200 "$WORK/h.out" "$WORK/h.err")"
else
    tb_blackhole_addr "$pa" 2>/dev/null
    T_BH=$(now_ms)
    wait $HPID
    l=$(grep -m1 '^error' "$WORK/h.out")
    if [ -n "$l" ]; then
        set -- $l
        t_end=${!#}
        ms=$((${t_end/./} - T_BH))
        check $([ "$2" = ETIMEDOUT ] && [ $ms -le $((BOUND + 2000)) ] && echo 0 || echo 1) \
            "h: the idle connection to $pa gets '$2' $(fmt_s $ms) after the blackhole (<= $(fmt_s $((BOUND + 2000))))"
    else
        fail "h: no error on the idle connection: $(head -c 200 "$WORK/h.out")"
    fi
    l=$(grep -m1 '^reconnect' "$WORK/h.out")
    if [ -n "$l" ]; then
        set -- $l
        ra=${2#::ffff:} rms=$3
        check $([ "$ra" != "$pa" ] && [ "$rms" -lt 150 ] && echo 0 || echo 1) \
            "h: the reconnect goes to $ra in $rms ms (< 150: $pa, marked down, tried last)"
    else
        fail "h: no reconnect: $(head -c 200 "$WORK/h.out" "$WORK/h.err")"
    fi
fi
tb_heal 2>/dev/null

# ------------------------------------------------ i. PostgreSQL client
# libpq switches SO_KEEPALIVE on and sets no timing, so psql waiting for a
# slow query on a path that died hangs for hours (keepalive idles 2 h).
# libresil must size the timing the program left alone: with it psql fails
# within the bound; without it, it is still waiting.
echo "--- i: psql waiting for SELECT pg_sleep(30) when the path dies, RESIL_FAIL_TIMEOUT_MS=$BOUND"
pg_ok=0
for i in $(seq 300); do
    tb_c "$PGBIN/pg_isready" -q -h "$TB_FIRST" -p $P_PG -t 1 && { pg_ok=1; break; }
    sleep 0.1
done
check $((1 - pg_ok)) "i: PostgreSQL answers on $TB_FIRST:$P_PG"
if [ $pg_ok = 1 ]; then
    declare -A IPID
    for mode in with without; do
        pre=()
        [ $mode = with ] && pre=(env LD_PRELOAD="$LIB" RESIL_EVENTS="$WORK/i-$mode.ev"
            RESIL_LOG_LEVEL=info RESIL_LOG_FILE="$WORK/i-$mode.log"
            RESIL_FAIL_TIMEOUT_MS=$BOUND)
        ( timeout 60 ip netns exec "$TB_C" "${pre[@]}" "$PGBIN/psql" -X -h "$TB_NAME" \
              -p $P_PG -U postgres -d postgres -Atc 'SELECT pg_sleep(30)' \
              >"$WORK/i-$mode.out" 2>&1
          echo "$? $(now_ms)" >"$WORK/i-$mode.res" ) &
        IPID[$mode]=$!
    done
    # both queries running on the server (and so acknowledged)
    running=0
    for i in $(seq 100); do
        running=$(tb_s runuser -u postgres -- "$PGBIN/psql" -X -h "$WORK/pg" -p $P_PG \
            -U postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'" 2>/dev/null)
        [ "$running" = 2 ] && break
        sleep 0.1
    done
    check $([ "$running" = 2 ] && echo 0 || echo 1) "i: both psql queries running"
    sleep 0.2
    tb_blackhole_uplink 1 2>/dev/null
    tb_blackhole_uplink 2 2>/dev/null
    T_BH=$(now_ms)
    while [ $(( $(now_ms) - T_BH )) -lt $((BOUND + 3000)) ] && [ ! -s "$WORK/i-with.res" ]; do
        sleep 0.1
    done
    if [ -s "$WORK/i-with.res" ]; then
        read -r rc t_end <"$WORK/i-with.res"
        ms=$((t_end - T_BH))
        check $([ "$rc" != 0 ] && [ $ms -le $((BOUND + 2000)) ] && echo 0 || echo 1) \
            "i: with libresil psql fails $(fmt_s $ms) after the path died (<= $(fmt_s $((BOUND + 2000))), exit $rc): $(tr '\n' ' ' <"$WORK/i-with.out" | head -c 160)"
    else
        fail "i: with libresil psql still waiting $(fmt_s $((BOUND + 3000))) after the path died"
    fi
    # without: at the latest moment the libresil run may fail
    while [ $(( $(now_ms) - T_BH )) -lt $((BOUND + 2000)) ]; do sleep 0.1; done
    if [ ! -s "$WORK/i-without.res" ]; then
        pass "i: without libresil psql still waiting $(fmt_s $(( $(now_ms) - T_BH ))) after the path died"
    else
        fail "i: without libresil psql ended: $(cat "$WORK/i-without.res") $(head -c 160 "$WORK/i-without.out")"
    fi
    for mode in with without; do
        pkill -P "${IPID[$mode]}" 2>/dev/null
        kill "${IPID[$mode]}" 2>/dev/null
    done
    wait "${IPID[@]}" 2>/dev/null
    tb_heal 2>/dev/null
fi

finish
