#!/bin/bash
# make bench: libresil's performance against plain, measured in one run.
#
#   tests/bench/run.sh BUILD
#
# Builds the bench program into BUILD/bench/, creates a private network
# namespace (lo up, an nftables output rule silently dropping everything to
# 127.0.0.66, the dead address), re-runs itself inside it and prints one
# table: measure | plain | libresil | ratio | target. The rows of a whole
# uplink dead build the two-uplink test bed (scripts/testbed.sh) for
# themselves, from inside that namespace. The ratio is always
# libresil / plain; the measure's unit says whether lower or higher is
# better. Targets are DESIGN.md section 5's where one applies.
#
# LD_PRELOAD goes only into the measured program, never into this script or
# the servers (unless a row says "both ends"). The bench reports, it does not
# assert targets: exit 0 when everything was measured, 1 when some measure
# could not be (its cells read "n/a" and the reason is printed), 2 when the
# test bed itself could not be built.
#
# Knobs (environment): BENCH_REPS (7), BENCH_QUICK=1 (fewer iterations, for
# trying the script out; the numbers are then noisier).
set -euo pipefail

BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
LIB=$BUILD/libresil.so
B=$BUILD/bench/bench
PY=/usr/bin/python3 # not a pyenv shim: it would be preloaded too

DEAD=127.0.0.66
LIVE=127.0.0.1
P_CLOSE=7101 # accept and close
P_ECHO=7102  # echo (ping-pong)
P_SINK=7103  # read to EOF, answer the byte count (bulk)
P_SINKR=7104 # the same, preloaded ("both ends")
P_HOLD=7105  # one thread, holds every connection open and echoes (scale)
P_REDIS=7110 # redis-server, plain
P_REDISR=7111 # redis-server, preloaded
P_SECHO=7120  # echo, preloaded, session port
P_SSTREAM=7121 # stream, preloaded, session port
P_SSINK=7122  # sink, preloaded, session port
P_SHOLD=7123  # hold, preloaded, session port
P_SREDIS=7124 # redis-server, preloaded, session port
PATHA=127.0.0.5 # a path that the failover rows kill (nft set dead)
SESS="*:$P_SECHO,*:$P_SSTREAM,*:$P_SSINK,*:$P_SHOLD,*:$P_SREDIS"

die() {
	echo "bench: $*" >&2
	exit 2
}

# ------------------------------------------------------------------------
# Outside: build, create the namespace, run the inside, clean up.
# ------------------------------------------------------------------------
if [ "${RESIL_BENCH_INSIDE:-}" != 1 ]; then
	[ "$(id -u)" = 0 ] || die "needs root (ip netns, nft)"
	[ -f "$LIB" ] || die "$LIB not built (make all)"
	for t in ip nft gcc "$PY" valgrind; do
		command -v "$t" >/dev/null || die "$t not found"
	done
	mkdir -p "$BUILD/bench"
	gcc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE \
		-o "$B" "$HERE/bench.c" -lpthread || die "cannot compile bench.c"

	NS=resil-bench-$$
	# whatever the inside left running (it kills its servers itself) goes
	# with the namespace
	trap 'for p in $(ip netns pids "$NS" 2>/dev/null); do
		kill "$p" 2>/dev/null || true; done
		ip netns del "$NS" 2>/dev/null || true
		rm -rf "/etc/netns/$NS"' EXIT
	trap 'exit 130' INT TERM
	# a name with several addresses, the first alive: ip netns exec
	# bind-mounts /etc/netns/$NS/hosts over /etc/hosts inside
	mkdir -p "/etc/netns/$NS" || die "cannot create /etc/netns/$NS"
	printf '127.0.0.1 localhost\n%s svc.bench\n%s svc.bench\n' \
		"$LIVE" "$DEAD" >"/etc/netns/$NS/hosts"
	ip netns add "$NS" || die "cannot create network namespace $NS"
	ip -n "$NS" link set lo up || die "cannot bring lo up in $NS"
	ip netns exec "$NS" nft -f - <<-EOF || die "cannot install the nft drop rule"
		table inet resil_bench {
			set dead { type ipv4_addr; }
			chain out {
				type filter hook output priority 0; policy accept;
				ip daddr $DEAD drop
			}
			chain in {
				type filter hook input priority 0; policy accept;
				ip saddr @dead drop
				ip daddr @dead drop
			}
		}
	EOF
	rc=0
	RESIL_BENCH_INSIDE=1 ip netns exec "$NS" "$0" "$BUILD" || rc=$?
	exit $rc
fi

# ------------------------------------------------------------------------
# Inside the namespace.
# ------------------------------------------------------------------------
unset LD_PRELOAD
# every RESIL_ variable, the marker too: with any in its environment,
# libresil takes its configuration at start-up (shim/init.c)
for v in $(compgen -e RESIL_); do unset "$v"; done

# Everything (servers, clients, libresil's engine thread) on one CPU: a
# 1-byte ping-pong between two CPUs of a VM swings 10x with where the
# scheduler puts the two ends, on one CPU it is stable to a few percent. It
# is also the harder case for libresil, whose engine thread then competes
# with the program for the CPU.
NCPU=$(nproc)
CPU=${BENCH_CPU:-$((NCPU - 1))}
if command -v taskset >/dev/null && taskset -cp "$CPU" $$ >/dev/null; then
	PINNED="pinned to CPU $CPU"
else
	PINNED="not pinned"
fi
REPS=${BENCH_REPS:-7}
if [ "${BENCH_QUICK:-}" = 1 ]; then
	N_UNM=50000 N_CONN=500 N_PP=5000 BULK_MIB=256 N_REDIS=5000
else
	N_UNM=300000 N_CONN=3000 N_PP=50000 BULK_MIB=1024 N_REDIS=20000
fi
N_SCALE=10000 # DESIGN.md's scale target; about 0.5 s a run
ALT="$DEAD,$LIVE"     # the service group: a connect to either races both
ALT_LIVE="$LIVE,$DEAD" # the same group, named live-first (cosmetic)

PIDS=()
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -z "${RDIR:-}" ] || rm -rf "$RDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Background servers: plain commands, or "exec env" so that $! is the
# server itself, not a subshell that a kill would leave orphaning it.
start_server() { # PORT MODE [pre]
	if [ "${3:-}" = pre ]; then
		exec env LD_PRELOAD="$LIB" "$B" serve "$1" "$2" &
	else
		"$B" serve "$1" "$2" &
	fi
	PIDS+=($!)
	"$B" waitport "$1" || die "server on port $1 did not start"
}

FAILED=0
ROWS=()
row() { ROWS+=("$1|$2|$3|$4|$5"); }
na() { # MEASURE TARGET WHY
	echo "bench: could not measure '$1': $3" >&2
	row "$1" n/a n/a n/a "$2"
	FAILED=1
}

# median of the arguments (numbers)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
	if (NR == 0) exit 1
	if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
# spread of the arguments: (max - min) / median, in percent
spread() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
	m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2
	printf "%.0f", (m > 0 ? 100 * (a[NR]-a[1]) / m : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# pratio LARR PARR (array names): element i of each was measured in the same
# repetition, back to back, so l[i]/p[i] cancels the drift both runs share.
# Prints the median of those paired ratios and their min-max in brackets,
# "0.95 (0.91-0.99)"; arrays of different lengths: the ratio of the medians.
pratio() {
	local -n pr_l_=$1 pr_p_=$2
	if [ ${#pr_l_[@]} != ${#pr_p_[@]} ] || [ ${#pr_l_[@]} = 0 ]; then
		ratio "$(median "${pr_l_[@]}")" "$(median "${pr_p_[@]}")"
		return
	fi
	paste <(printf '%s\n' "${pr_l_[@]}") <(printf '%s\n' "${pr_p_[@]}") |
		awk '{ print ($2 > 0 ? $1 / $2 : 0) }' | sort -g | awk '
		{ a[NR] = $1 }
		END { m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2
			printf "%.2f", m
			if (NR > 1) printf " (%.2f-%.2f)", a[1], a[NR] }'
}
fmt() { awk -v v="$1" 'BEGIN {
	if (v >= 100000) printf "%.0f", v; else if (v >= 100) printf "%.0f", v
	else if (v >= 10) printf "%.1f", v; else if (v >= 1) printf "%.2f", v
	else printf "%.3f", v }'; }
# cell: median with the spread of the repetitions
cell() { echo "$(fmt "$(median "$@")") +-$(spread "$@")%"; }

# ab_row MEASURE TARGET WHY PLAIN LIBRESIL: REPS runs of the two commands
# (each a function and its words), back to back; one row of their cells
# and ratio, or n/a with WHY when one fails
ab_row() {
	local ab_a=() ab_b=() x r
	for ((r = 0; r < REPS; r++)); do
		# shellcheck disable=SC2086 # the command's words
		x=$($4) || { na "$1" "$2" "$3"; return; }; ab_a+=("$x")
		# shellcheck disable=SC2086
		x=$($5) || { na "$1" "$2" "$3"; return; }; ab_b+=("$x")
	done
	row "$1" "$(cell "${ab_a[@]}")" "$(cell "${ab_b[@]}")" \
		"$(pratio ab_b ab_a)" "$2"
}

# measure [pre] [VAR=VAL...] CMD...: run with a timeout (and preloaded after
# "pre"); its stdout on success, non-zero otherwise
measure() {
	if [ "$1" = pre ]; then
		shift
		timeout 60 env LD_PRELOAD="$LIB" "$@"
	else
		timeout 60 "$@"
	fi
}

echo "libresil bench: $(uname -r), $NCPU CPUs ($PINNED)," \
	"$REPS repetitions, $LIB"
echo "(running; about a minute)"

start_server $P_CLOSE close
start_server $P_ECHO echo
start_server $P_SINK sink
start_server $P_SINKR sink pre

# ---- 1. connect with the first address dead ----------------------------
T1="<= 300 ms (delay+2RTT)"
M="connect, 1st addr dead, C blocking (ms)"
out=$(measure "$B" connect $DEAD $P_CLOSE 3000 1) || out=
if [ -z "$out" ]; then
	na "$M" "$T1" "the plain connect failed to run"
elif [ "${out#*:}" = 0 ]; then
	die "a plain connect to $DEAD succeeded: the drop rule does not work"
else
	plain_ms=${out%%:*} cold=() warm=() ok=1
	for ((r = 0; r < REPS; r++)); do
		# a fresh process each time: the per-process health cache
		# would otherwise remember the dead address
		out=$(measure pre RESIL_ALTERNATES="$ALT" \
			"$B" connect $DEAD $P_CLOSE 3000 3) || { ok=0; break; }
		read -r a b c <<<"$out"
		for x in "$a" "$b" "$c"; do
			[ "${x#*:}" = 0 ] || { ok=0; echo "bench: connect: $out" >&2; }
		done
		cold+=("${a%%:*}")
		warm+=("${b%%:*}" "${c%%:*}")
	done
	if [ $ok = 1 ]; then
		p="$(fmt "$plain_ms") (timed out; 127 s with default SYN retries)"
		row "$M" "$p" "$(cell "${cold[@]}")" \
			"$(ratio "$(median "${cold[@]}")" "$plain_ms") ($(awk \
			-v a="$(median "${cold[@]}")" 'BEGIN { printf "%.4f", \
			a / 127000 }') of 127 s)" "$T1"
		row "  same process, 2nd+3rd connect (ms)" "" \
			"$(cell "${warm[@]}")" "" "(health cache)"
	else
		na "$M" "$T1" "a libresil connect did not complete"
	fi
fi

M="connect, 1st addr dead, python3 create_connection (ms)"
pycode='
import socket, sys, time
t = time.perf_counter()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.close(); r = 0
except OSError as e:
    r = e.errno or "timeout"
print("%.1f:%s" % ((time.perf_counter() - t) * 1e3, r))'
out=$(measure "$PY" -c "$pycode" $DEAD $P_CLOSE) || out=
if [ -z "$out" ] || [ "${out#*:}" = 0 ]; then
	na "$M" "$T1" "plain python3 run: '$out'"
else
	plain_ms=${out%%:*} v=() ok=1
	for ((r = 0; r < REPS; r++)); do
		out=$(measure pre RESIL_ALTERNATES="$ALT" "$PY" -c "$pycode" \
			$DEAD $P_CLOSE) || { ok=0; break; }
		[ "${out#*:}" = 0 ] || { ok=0; echo "bench: python: $out" >&2; break; }
		v+=("${out%%:*}")
	done
	if [ $ok = 1 ]; then
		row "$M" "$(fmt "$plain_ms") (timed out)" "$(cell "${v[@]}")" \
			"$(ratio "$(median "${v[@]}")" "$plain_ms")" "$T1"
	else
		na "$M" "$T1" "a libresil python3 connect did not complete"
	fi
fi

# ---- 1b. connect with a whole uplink dead (the two-uplink bed) ----------
# scripts/testbed.sh: a server with two uplinks, an IPv4 and an IPv6
# address on each (the name has all four); uplink 1 blackholed. python3's
# create_connection to the name, a fresh process (cold), and the second
# connect of a process whose first one, made while all was well, won on
# uplink 1 (history: the health cache is per process). Plain TCP gets a
# 1 s timeout per address (without one it hangs 127 s on each dead one).
T1B="<= 1 attempt delay (250 ms)"
T1H="<= 50 ms"
fabpy='
import socket, sys, time
name, port, tmo, twice = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
for i in range(2 if twice else 1):
    if i:
        print("ready", flush=True)
        sys.stdin.readline()
    t = time.perf_counter()
    s = socket.create_connection((name, port), timeout=tmo)
    print("%.1f %s" % ((time.perf_counter() - t) * 1e3, s.getpeername()[0]), flush=True)
    s.close()'
# Prints "cold_plain MS", "cold MS" and "hist MS" lines (one per run); runs
# in a subshell of its own: the bed's trap takes it down even when it
# cannot be built.
fabric_runs() {
	set +e
	# shellcheck source=../../scripts/testbed.sh
	. "$ROOT/scripts/testbed.sh"
	TB_QUIET=1
	tb_up "bench$$" >&2 || exit 1
	tb_bg_s "$PY" "$ROOT/tests/net/servers.py" echo 7000 >/dev/null 2>&1
	local i r x
	for i in $(seq 50); do
		tb_c "$PY" -c "import socket; [socket.create_connection((a, 7000), 1).close() for a in '$TB_ADDRS'.split()]" \
			2>/dev/null && break
		sleep 0.1
	done
	tb_blackhole_uplink 1 2>/dev/null
	x=$(tb_c "$PY" -c "$fabpy" "$TB_NAME" 7000 1 0 2>/dev/null) &&
		echo "cold_plain ${x%% *}"
	for ((r = 0; r < REPS; r++)); do
		x=$(tb_c env LD_PRELOAD="$LIB" "$PY" -c "$fabpy" "$TB_NAME" 7000 5 0 \
			2>/dev/null) && echo "cold ${x%% *}"
	done
	tb_heal 2>/dev/null
	for ((r = 0; r < REPS; r++)); do
		coproc FAB { tb_c env LD_PRELOAD="$LIB" "$PY" -c "$fabpy" \
			"$TB_NAME" 7000 5 1 2>/dev/null; }
		read -r -t 10 x <&"${FAB[0]}" # the first connect
		read -r -t 10 x <&"${FAB[0]}" # ready
		tb_blackhole_uplink 1 2>/dev/null
		echo go >&"${FAB[1]}"
		read -r -t 10 x <&"${FAB[0]}" && echo "hist ${x%% *}"
		wait "$FAB_PID" 2>/dev/null
		tb_heal 2>/dev/null
	done
	tb_down >&2
}
fab=$(fabric_runs 2>/dev/null) || fab=
fcold=() fhist=()
fplain=$(awk '$1 == "cold_plain" { print $2 }' <<<"$fab")
while read -r k v; do
	case $k in cold) fcold+=("$v") ;; hist) fhist+=("$v") ;; esac
done <<<"$fab"
M="connect, uplink 1 dead, python3 to a 4-address name (ms)"
if [ -n "$fplain" ] && [ ${#fcold[@]} = "$REPS" ]; then
	row "$M" "$(fmt "$fplain") (1 s timeout per address)" \
		"$(cell "${fcold[@]}")" \
		"$(ratio "$(median "${fcold[@]}")" "$fplain")" "$T1B"
else
	na "$M" "$T1B" "the two-uplink bed or a client failed ('$fab')"
fi
M="  same process, 2nd connect, uplink died after the 1st (ms)"
if [ -n "$fplain" ] && [ ${#fhist[@]} = "$REPS" ]; then
	row "$M" "$(fmt "$fplain") (no history)" "$(cell "${fhist[@]}")" \
		"$(ratio "$(median "${fhist[@]}")" "$fplain")" "$T1H"
else
	na "$M" "$T1H" "the two-uplink bed or a client failed ('$fab')"
fi

# ---- 2. unmanaged calls --------------------------------------------------
T2="~1.00 (within noise)"
pp=() pl=() pu=() rp=() rl=() ru=() ok=1
for ((r = 0; r < REPS; r++)); do
	out=$(measure "$B" unmanaged $N_UNM) || { ok=0; break; }
	read -r a b c <<<"$out"; pp+=("$a") pl+=("$b") pu+=("$c")
	out=$(measure pre "$B" unmanaged $N_UNM) || { ok=0; break; }
	read -r a b c <<<"$out"; rp+=("$a") rl+=("$b") ru+=("$c")
done
if [ $ok = 1 ]; then
	row "unmanaged: pipe write/read (ns/call)" "$(cell "${pp[@]}")" \
		"$(cell "${rp[@]}")" "$(pratio rp pp)" "$T2"
	row "unmanaged: poll() on a pipe (ns/call)" "$(cell "${pl[@]}")" \
		"$(cell "${rl[@]}")" "$(pratio rl pl)" "$T2"
	row "unmanaged: UDP send/recv (ns/call)" "$(cell "${pu[@]}")" \
		"$(cell "${ru[@]}")" "$(pratio ru pu)" "$T2"
else
	na "unmanaged fd calls (ns/call)" "$T2" "the unmanaged loop failed"
fi

# The same, counted in instructions (callgrind counts are exact and do not
# depend on the machine's load): two runs of N and 2N pipe write+read pairs
# cancel the start-up, the difference over 2N calls is the cost of a call.
ir() { # [pre] CMD...: instructions callgrind collected
	local pre=()
	if [ "$1" = pre ]; then pre=(env LD_PRELOAD="$LIB"); shift; fi
	"${pre[@]}" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$@" 2>&1 | awk '/Collected :/ { print $NF; found = 1 }
		END { exit !found }'
}
per_call() { # [pre]: instructions per unmanaged pipe call
	local a b
	a=$(ir "$@" "$B" loop 10000) && b=$(ir "$@" "$B" loop 20000) &&
		awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) / 20000 }'
}
M="unmanaged call: instructions per call (callgrind)"
if ip_=$(per_call) && ir_=$(per_call pre); then
	row "$M" "$ip_" "$ir_" "$(awk -v a="$ir_" -v b="$ip_" \
		'BEGIN { printf "%+.1f", a - b }')" "<= +16 (floor ~12)"
else
	na "$M" "<= +16" "callgrind failed"
fi
M="process start+exit: instructions (callgrind, /bin/true)"
if a=$(ir /bin/true) && b=$(ir pre /bin/true); then
	row "$M" "$a" "$b" "$(ratio "$b" "$a") ($(awk -v a="$a" -v b="$b" \
		'BEGIN { printf "%+d", b - a }'))" ""
else
	na "$M" "" "callgrind failed"
fi

# process start: the constructor's cost (exec of /bin/true, 200 times)
starts() { # [VAR=VAL...]: prints microseconds per exec
	local t0=$EPOCHREALTIME i
	for ((i = 0; i < 200; i++)); do env "$@" /bin/true || return 1; done
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b-a)*1e6/200 }'
}
# the floor: any preloaded library costs its mapping and its relocations
# (an empty one: about 1.10 on this kind of VM, where the target of 1.05
# lies under it)
EMPTY=$BUILD/bench/libempty.so
echo 'int resil_bench_empty(void) { return 0; }' |
	${CC:-cc} -shared -fPIC -O2 -x c -o "$EMPTY" - || die "cc failed"
sp=() sr=() se=() ok=1
for ((r = 0; r < REPS; r++)); do
	x=$(starts) || { ok=0; break; }; sp+=("$x")
	x=$(starts LD_PRELOAD="$LIB") || { ok=0; break; }; sr+=("$x")
	x=$(starts LD_PRELOAD="$EMPTY") || { ok=0; break; }; se+=("$x")
done
if [ $ok = 1 ]; then
	row "process start+exit, /bin/true (us)" "$(cell "${sp[@]}")" \
		"$(cell "${sr[@]}")" "$(pratio sr sp)" "<= 1.05"
	row "process start+exit, an empty preloaded library (the floor, us)" \
		"$(cell "${sp[@]}")" "$(cell "${se[@]}")" "$(pratio se sp)" ""
else
	na "process start+exit, /bin/true (us)" "" "exec failed"
fi

# ---- 3. managed connect on a healthy path --------------------------------
# blocking and non-blocking (EINPROGRESS, poll, SO_ERROR); one address;
# a raced group whose first candidate is alive; the same group asked for
# by its dead address (the first connect races, the health cache then
# orders the live one first)
for mode in "" nb; do
	cp=() cs=() ca=() cd=() ok=1
	for ((r = 0; r < REPS; r++)); do
		x=$(measure "$B" connrate $LIVE $P_CLOSE $N_CONN $mode) ||
			{ ok=0; break; }
		cp+=("$x")
		x=$(measure pre "$B" connrate $LIVE $P_CLOSE $N_CONN $mode) ||
			{ ok=0; break; }
		cs+=("$x")
		x=$(measure pre RESIL_ALTERNATES="$ALT_LIVE" \
			"$B" connrate $LIVE $P_CLOSE $N_CONN $mode) || { ok=0; break; }
		ca+=("$x")
		x=$(measure pre RESIL_ALTERNATES="$ALT" \
			"$B" connrate $DEAD $P_CLOSE $N_CONN $mode) || { ok=0; break; }
		cd+=("$x")
	done
	how=${mode:+non-blocking}
	how=${how:-blocking}
	if [ $ok = 1 ]; then
		row "connect+close $how, 1 address (conn/s)" \
			"$(cell "${cp[@]}")" "$(cell "${cs[@]}")" \
			"$(pratio cs cp)" \
			">= 0.97"
		row "connect+close $how, group, 1st live (conn/s)" \
			"$(cell "${cp[@]}")" "$(cell "${ca[@]}")" \
			"$(pratio ca cp)" \
			">= 0.90"
		row "connect+close $how, group, 1st dead (conn/s)" \
			"$(cell "${cp[@]}")" "$(cell "${cd[@]}")" \
			"$(pratio cd cp)" \
			"(after the 1st: cache)"
	else
		na "connect+close $how (conn/s)" "" "the connect loop failed"
	fi
done
# The same connect+close in instructions of the program's own thread
# (callgrind, 2000 connects minus 1000: exact, where the rates above swing
# with the VM's scheduling): what the hooks add to every connect. The
# engine's share (keepalive an attempt delay later) runs on its thread.
# shellcheck source=tests/bench/ir.sh
. "$ROOT/tests/bench/ir.sh"
cc_ir() { # blk|nb [VAR=VAL...]: instructions per connect+close
	local nb=()
	[ "$1" = nb ] && nb=(nb)
	shift
	ir_per 1000 "$@" -- "$B" connrate $LIVE $P_CLOSE @N "${nb[@]}"
}
for mode in blk nb; do
	how=blocking
	[ $mode = nb ] && how=non-blocking
	M="connect+close $how: instructions per connect, 1 address / group (callgrind, program's thread)"
	if p=$(cc_ir $mode) && s=$(cc_ir $mode LD_PRELOAD="$LIB") &&
		g=$(cc_ir $mode LD_PRELOAD="$LIB" RESIL_ALTERNATES="$ALT_LIVE"); then
		row "$M" "$p" "$s / $g" "+$((s - p)) / +$((g - p))" ""
	else
		na "$M" "" "callgrind failed"
	fi
done

# ---- 4. data path on a managed connected socket ------------------------
pp=() pr=() ok=1
for ((r = 0; r < REPS; r++)); do
	x=$(measure "$B" pingpong $LIVE $P_ECHO $N_PP) || { ok=0; break; }
	pp+=("$x")
	x=$(measure pre RESIL_ALTERNATES="$ALT_LIVE" \
		"$B" pingpong $LIVE $P_ECHO $N_PP) || { ok=0; break; }
	pr+=("$x")
done
if [ $ok = 1 ]; then
	row "1-byte ping-pong, client preloaded (RT/s)" "$(cell "${pp[@]}")" \
		"$(cell "${pr[@]}")" "$(pratio pr pp)" ">= 0.97"
else
	na "1-byte ping-pong (RT/s)" ">= 0.97" "the ping-pong loop failed"
fi

# the per-call price of a hook on a managed fd, without the network: on a
# connection to a raced group, and on a single-address one. libresil starts
# its engine thread at every connect (it sets the keepalive options an
# attempt delay, 250 ms, after it); strace -f shows the clone3 inside the
# connect, before the measured loops, in both. So both libresil runs are
# multi-threaded where plain is not (the kernel then makes every descriptor
# call take and drop a file reference, fdget), and the difference between
# the two sets of rows is the raced group's cost over a single address.
T4="<= 1.05"
mp=() me=() mm=() rp=() re=() rm=() dp=() de=() dm=() ok=1
for ((r = 0; r < REPS; r++)); do
	out=$(measure "$B" managed $LIVE $P_ECHO $N_UNM) || { ok=0; break; }
	read -r a b c <<<"$out"; mp+=("$a") me+=("$b") mm+=("$c")
	out=$(measure pre RESIL_ALTERNATES="$ALT_LIVE" \
		"$B" managed $LIVE $P_ECHO $N_UNM) || { ok=0; break; }
	read -r a b c <<<"$out"; rp+=("$a") re+=("$b") rm+=("$c")
	out=$(measure pre "$B" managed $LIVE $P_ECHO $N_UNM) || { ok=0; break; }
	read -r a b c <<<"$out"; dp+=("$a") de+=("$b") dm+=("$c")
done
if [ $ok = 1 ]; then
	mrow() { # MEASURE TARGET PLAIN... -- LIBRESIL...
		local m=$1 t=$2 p=() l=()
		shift 2
		while [ "$1" != -- ]; do p+=("$1"); shift; done
		shift
		l=("$@")
		row "$m" "$(cell "${p[@]}")" "$(cell "${l[@]}")" \
			"$(pratio l p)" "$t"
	}
	mrow "managed fd, raced group: recv() -> EAGAIN (ns/call)" "$T4" \
		"${mp[@]}" -- "${rp[@]}"
	mrow "managed fd, raced group: epoll_ctl ADD/DEL (ns/call)" "$T4" \
		"${me[@]}" -- "${re[@]}"
	mrow "managed fd, raced group: epoll_ctl MOD in <-> in+out (ns/call)" \
		"" "${mm[@]}" -- "${rm[@]}"
	mrow "  1 address (engine thread too): recv() EAGAIN" "" \
		"${mp[@]}" -- "${dp[@]}"
	mrow "  1 address (engine thread too): ADD/DEL" "" \
		"${me[@]}" -- "${de[@]}"
	mrow "  1 address (engine thread too): MOD" "" "${mm[@]}" -- "${dm[@]}"
else
	na "managed fd calls (ns/call)" "$T4" "the managed-fd loop failed"
fi
# the same in instructions (exact): libresil's cost per call over plain,
# on a single-address connection (a raced one adds the race's start-up,
# which need not be the same in two runs, and no cost per call)
mloop_ir() { # [pre] WHAT N: instructions
	local pre=() w n
	if [ "$1" = pre ]; then pre=(env LD_PRELOAD="$LIB"); shift; fi
	w=$1 n=$2
	"${pre[@]}" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$B" mloop $LIVE $P_ECHO "$n" "$w" 2>&1 |
		awk '/Collected :/ { print $NF; found = 1 } END { exit !found }'
}
mloop_per() { # [pre] WHAT CALLS_PER_ITERATION: instructions per call
	local a b pre=()
	if [ "$1" = pre ]; then pre=(pre); shift; fi
	a=$(mloop_ir "${pre[@]}" "$1" 10000) &&
		b=$(mloop_ir "${pre[@]}" "$1" 20000) &&
		awk -v a="$a" -v b="$b" -v k="$2" \
			'BEGIN { printf "%.0f", (b - a) / (10000 * k) }'
}
M="managed fd: instructions per call, recv / ADD+DEL / MOD (callgrind)"
if i1=$(mloop_per recv 1) && i2=$(mloop_per ctl 2) && i3=$(mloop_per mod 2) &&
	j1=$(mloop_per pre recv 1) && j2=$(mloop_per pre ctl 2) &&
	j3=$(mloop_per pre mod 2); then
	row "$M" "$i1 / $i2 / $i3" "$j1 / $j2 / $j3" \
		"+$((j1 - i1)) / +$((j2 - i2)) / +$((j3 - i3))" ""
else
	na "$M" "" "callgrind failed"
fi

bp=() bc=() bb=() ok=1
for ((r = 0; r < REPS; r++)); do
	x=$(measure "$B" bulk $LIVE $P_SINK $BULK_MIB) || { ok=0; break; }
	bp+=("$x")
	x=$(measure pre RESIL_ALTERNATES="$ALT_LIVE" \
		"$B" bulk $LIVE $P_SINK $BULK_MIB) || { ok=0; break; }
	bc+=("$x")
	x=$(measure pre RESIL_ALTERNATES="$ALT_LIVE" \
		"$B" bulk $LIVE $P_SINKR $BULK_MIB) || { ok=0; break; }
	bb+=("$x")
done
if [ $ok = 1 ]; then
	M="bulk $BULK_MIB MiB, 64 KiB writes (MiB/s)"
	row "$M, client" "$(cell "${bp[@]}")" "$(cell "${bc[@]}")" \
		"$(pratio bc bp)" ">= 0.97"
	row "$M, both ends" "$(cell "${bp[@]}")" "$(cell "${bb[@]}")" \
		"$(pratio bb bp)" ">= 0.97"
else
	na "bulk throughput (MiB/s)" ">= 0.97" "the bulk transfer failed"
fi

# redis-benchmark -c 1 PING against redis-server: none vs both preloaded
M="redis-benchmark -c1 PING_MBULK, both ends (req/s)"
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null
then
	RDIR=$(mktemp -d)
	rs() { # PORT: redis-server args
		echo --port "$1" --bind $LIVE --save "" --appendonly no \
			--protected-mode no --daemonize no --dir "$RDIR" \
			--logfile "$RDIR/redis-$1.log"
	}
	# shellcheck disable=SC2046
	redis-server $(rs $P_REDIS) & PIDS+=($!)
	# shellcheck disable=SC2046
	exec env LD_PRELOAD="$LIB" redis-server $(rs $P_REDISR) & PIDS+=($!)
	if ! "$B" waitport $P_REDIS || ! "$B" waitport $P_REDISR; then
		die "redis-server did not start"
	fi
	rb() { # PORT [pre|sess]: PING_MBULK requests/s
		local cmd=(redis-benchmark -h "$LIVE" -p "$1" -c 1 -n "$N_REDIS"
			-t ping --csv)
		if [ "${2:-}" = pre ]; then
			cmd=(pre RESIL_ALTERNATES="$ALT_LIVE" "${cmd[@]}")
		elif [ "${2:-}" = sess ]; then
			cmd=(pre RESIL_SESSION="$SESS" "${cmd[@]}")
		fi
		measure "${cmd[@]}" 2>/dev/null | awk -F'"' \
			'$2 == "PING_MBULK" { print $4; found = 1 }
			 END { exit !found }'
	}
	qp=() qr=() ok=1
	for ((r = 0; r < REPS; r++)); do
		x=$(rb $P_REDIS) || { ok=0; break; }; qp+=("$x")
		x=$(rb $P_REDISR pre) || { ok=0; break; }; qr+=("$x")
	done
	if [ $ok = 1 ]; then
		row "$M" "$(cell "${qp[@]}")" "$(cell "${qr[@]}")" \
			"$(pratio qr qp)" \
			">= 0.97"
	else
		na "$M" ">= 0.97" "redis-benchmark failed"
	fi
	# -c 50 (its default): 50 connections in request/response in one
	# event loop, where a per-request cost of the dead-path monitor shows
	rb50() { # PORT TEST [pre]: requests/s
		local cmd=(redis-benchmark -h "$LIVE" -p "$1" -c 50
			-n "$N_REDIS" -t "$2" --csv)
		if [ "${3:-}" = pre ]; then
			cmd=(pre RESIL_ALTERNATES="$ALT_LIVE" "${cmd[@]}")
		fi
		measure "${cmd[@]}" 2>/dev/null | awk -F'"' -v t="${2^^}" \
			'$2 == t { print $4; found = 1 } END { exit !found }'
	}
	for t in get set; do
		M="redis-benchmark -c50 ${t^^}"
		qp=() qc=() qb=() ok=1
		for ((r = 0; r < REPS; r++)); do
			x=$(rb50 $P_REDIS $t) || { ok=0; break; }; qp+=("$x")
			x=$(rb50 $P_REDIS $t pre) || { ok=0; break; }; qc+=("$x")
			x=$(rb50 $P_REDISR $t pre) || { ok=0; break; }; qb+=("$x")
		done
		if [ $ok = 1 ]; then
			row "$M, client (req/s)" "$(cell "${qp[@]}")" \
				"$(cell "${qc[@]}")" "$(pratio qc qp)" ">= 0.95"
			row "$M, both ends (req/s)" "$(cell "${qp[@]}")" \
				"$(cell "${qb[@]}")" "$(pratio qb qp)" ">= 0.95"
		else
			na "$M (req/s)" ">= 0.95" "redis-benchmark -c 50 failed"
		fi
	done
else
	row "$M" "(redis not installed)" "" "" ">= 0.95"
fi

# The shapes programs really have: 50 connections in one event loop
# (redis-benchmark's default), and a new connection per request (-k 0), to
# a numeric address of a raced group and to a name with two addresses (the
# namespace's hosts file: svc.bench). Plain, client preloaded, both ends.
if command -v redis-benchmark >/dev/null && [ -n "${RDIR:-}" ]; then
	rbm() { # PORT TEST [pre] [-k 0 ...]: requests/s of TEST
		local port=$1 t=$2 pre=() host=$LIVE
		shift 2
		if [ "${1:-}" = pre ]; then
			pre=(pre RESIL_ALTERNATES="$ALT_LIVE"); shift
		fi
		if [ "${1:-}" = name ]; then host=svc.bench; shift; fi
		local n=$N_REDIS
		# a connection per request: fewer, or the ephemeral ports run out
		[ "${2:-}" = 0 ] && n=$((N_REDIS / 4))
		measure "${pre[@]}" redis-benchmark -h "$host" -p "$port" \
			-n "$n" -t "$t" --csv "$@" 2>/dev/null |
			awk -F'"' -v t="${t^^}" '$2 == t { print $4; found = 1 }
			END { exit !found }'
	}
	for t in get set; do
		qp=() qc=() qb=() ok=1
		for ((r = 0; r < REPS; r++)); do
			x=$(rbm $P_REDIS $t -c 50) || { ok=0; break; }; qp+=("$x")
			x=$(rbm $P_REDIS $t pre -c 50) || { ok=0; break; }; qc+=("$x")
			x=$(rbm $P_REDISR $t pre -c 50) || { ok=0; break; }; qb+=("$x")
		done
		M="redis-benchmark -c 50 ${t^^} (req/s)"
		if [ $ok = 1 ]; then
			row "$M, client" "$(cell "${qp[@]}")" "$(cell "${qc[@]}")" \
				"$(pratio qc qp)" \
				">= 0.95"
			row "$M, both ends" "$(cell "${qp[@]}")" "$(cell "${qb[@]}")" \
				"$(pratio qb qp)" \
				">= 0.95"
		else
			na "$M" ">= 0.95" "redis-benchmark failed"
		fi
	done
	# the name row against plain to the same name: the client resolves it
	# per connection (hiredis), which costs the same in both runs
	qp=() qpn=() qn=() qa=() ok=1
	for ((r = 0; r < REPS; r++)); do
		x=$(rbm $P_REDIS get -k 0 -c 10) || { ok=0; break; }; qp+=("$x")
		x=$(rbm $P_REDIS get pre -k 0 -c 10) || { ok=0; break; }
		qa+=("$x")
		x=$(rbm $P_REDIS get name -k 0 -c 10) || { ok=0; break; }
		qpn+=("$x")
		x=$(rbm $P_REDIS get pre name -k 0 -c 10) || { ok=0; break; }
		qn+=("$x")
	done
	M="redis-benchmark -k 0 -c 10 GET (a connection per request, req/s)"
	if [ $ok = 1 ]; then
		row "$M, numeric, raced group" "$(cell "${qp[@]}")" \
			"$(cell "${qa[@]}")" "$(pratio qa qp)" ">= 0.90"
		row "$M, name with 2 addresses" "$(cell "${qpn[@]}")" \
			"$(cell "${qn[@]}")" "$(pratio qn qpn)" ">= 0.90"
	else
		na "$M" ">= 0.90" "redis-benchmark -k 0 failed"
	fi
fi

# ---- 5. scale: N managed connections held open in one process ----------
# One address, no alternates: each connect is the real connect plus
# libresil's bookkeeping (table entry, keepalive, the monitor). The client
# and the server raise RLIMIT_NOFILE themselves (setrlimit, as root).
T5="<= 1.10 (10,000 in one process)"
start_server $P_HOLD hold
so=() sr=() mo=() mr=() eo=() er=() fo=0 fr=0 ok=1
for ((r = 0; r < REPS; r++)); do
	out=$(measure "$B" scale $LIVE $P_HOLD $N_SCALE) || { ok=0; break; }
	read -r a b c d <<<"$out"; so+=("$a") mo+=("$b") eo+=("$c")
	fo=$((fo + d))
	out=$(measure pre "$B" scale $LIVE $P_HOLD $N_SCALE) || { ok=0; break; }
	read -r a b c d <<<"$out"; sr+=("$a") mr+=("$b") er+=("$c")
	fr=$((fr + d))
done
if [ $ok = 1 ]; then
	row "scale: $N_SCALE connections open (ms)" "$(cell "${so[@]}")" \
		"$(cell "${sr[@]}")" "$(pratio sr so)" "$T5"
	row "scale: client RSS per connection (anon, bytes)" "$(cell "${mo[@]}")" \
		"$(cell "${mr[@]}")" "$(awk -v a="$(median "${mr[@]}")" \
		-v b="$(median "${mo[@]}")" 'BEGIN { d = sprintf("%+.0f B", a - b)
		# plain is usually 0: the sockets live in the kernel
		if (b > 0) printf "%.2f (%s)", a / b, d; else print d }')" \
		"(idle session <= 4 KiB)"
	row "scale: 1 byte echoed on all $N_SCALE, epoll (ms)" \
		"$(cell "${eo[@]}")" "$(cell "${er[@]}")" "$(pratio er eo)" \
		"<= 1.10"
	row "scale: failed connect/write/echo, all runs" "$fo" "$fr" "" "0"
	# the client's own instructions per connection (exact): socket,
	# connect, epoll ADD, write, read, DEL, close
	sc_ir() { # [pre] N
		local pre=()
		if [ "$1" = pre ]; then pre=(env LD_PRELOAD="$LIB"); shift; fi
		"${pre[@]}" valgrind --tool=callgrind \
			--callgrind-out-file=/dev/null "$B" scale $LIVE $P_HOLD "$1" \
			2>&1 | awk '/Collected :/ { print $NF; found = 1 }
			END { exit !found }'
	}
	M="scale: client instructions per connection (callgrind)"
	if a=$(sc_ir 1000) && b=$(sc_ir 2000) && c=$(sc_ir pre 1000) &&
		d=$(sc_ir pre 2000); then
		ip_=$(((b - a) / 1000)) ir_=$(((d - c) / 1000))
		row "$M" "$ip_" "$ir_" "+$((ir_ - ip_))" ""
	else
		na "$M" "" "callgrind failed"
	fi
	if [ "$fo" != 0 ] || [ "$fr" != 0 ]; then
		echo "bench: scale: $fo plain and $fr libresil connections" \
			"failed (connect, write or echo)" >&2
		FAILED=1
	fi
else
	na "scale: $N_SCALE connections open (ms)" "$T5" \
		"the scale client failed"
fi

# ---- 6. the session layer: both ends preloaded with RESIL_SESSION ---------
T6="<= 500 ms (MPTCP ~200)"
sstart() { # PORT MODE: a preloaded server on a session port
	exec env LD_PRELOAD="$LIB" RESIL_SESSION="$SESS" "$B" serve "$1" "$2" &
	PIDS+=($!)
	"$B" waitport "$1" || die "server on port $1 did not start"
}
spre() { # CMD...: a preloaded session client
	measure env LD_PRELOAD="$LIB" RESIL_SESSION="$SESS" "$@"
}
sstart $P_SECHO echo
sstart $P_SSTREAM stream
sstart $P_SSINK sink
for how in rr rx idle; do
	port=$P_SECHO
	[ $how = rx ] && port=$P_SSTREAM
	v=() ok=1
	for ((r = 0; r < REPS; r++)); do
		x=$(spre "$B" failover $PATHA $port $how) || { ok=0; break; }
		v+=("$x")
	done
	case $how in
	rr) M="session failover, request/response (ms)" ;;
	rx) M="session failover, client only receiving (ms)" ;;
	idle) M="session failover, idle then a request (ms)" ;;
	esac
	if [ $ok = 1 ]; then
		# plain TCP: the connection hangs (minutes), then fails
		row "$M" "never (hangs, then fails)" "$(cell "${v[@]}")" "" "$T6"
	else
		na "$M" "$T6" "the failover client failed"
	fi
done
bp=() bs=() ok=1
for ((r = 0; r < REPS; r++)); do
	x=$(measure "$B" bulk $LIVE $P_SINK $BULK_MIB) || { ok=0; break; }
	bp+=("$x")
	x=$(spre "$B" bulk $LIVE $P_SSINK $BULK_MIB) || { ok=0; break; }
	bs+=("$x")
done
M="bulk $BULK_MIB MiB, session mode both ends (MiB/s)"
if [ $ok = 1 ]; then
	row "$M" "$(cell "${bp[@]}")" "$(cell "${bs[@]}")" \
		"$(pratio bs bp)" ">= 0.95"
else
	na "$M" ">= 0.95" "the session bulk transfer failed"
fi
pp=() ps=() ok=1
for ((r = 0; r < REPS; r++)); do
	x=$(measure "$B" pingpong $LIVE $P_ECHO $N_PP) || { ok=0; break; }
	pp+=("$x")
	x=$(spre "$B" pingpong $LIVE $P_SECHO $N_PP) || { ok=0; break; }
	ps+=("$x")
done
M="1-byte ping-pong, session mode both ends (RT/s)"
if [ $ok = 1 ]; then
	row "$M" "$(cell "${pp[@]}")" "$(cell "${ps[@]}")" \
		"$(pratio ps pp)" ">= 0.95"
else
	na "$M" ">= 0.95" "the session ping-pong failed"
fi
if command -v redis-server >/dev/null && [ -n "${RDIR:-}" ]; then
	# shellcheck disable=SC2046
	exec env LD_PRELOAD="$LIB" RESIL_SESSION="$SESS" \
		redis-server $(rs $P_SREDIS) & PIDS+=($!)
	"$B" waitport $P_SREDIS || die "redis-server did not start"
	ab_row "redis-benchmark -c1 PING_MBULK, session mode both ends (req/s)" \
		">= 0.95" "redis-benchmark failed" "rb $P_REDIS" "rb $P_SREDIS sess"
	# a new session per request: the handshake's whole cost (HELLO,
	# WELCOME, key agreement), with non-blocking connects (hiredis)
	rk() { # PORT [sess]: GET requests/s, a connection per request
		local cmd=(redis-benchmark -h "$LIVE" -p "$1" -c 10 -k 0
			-n $((N_REDIS / 4)) -t get --csv)
		[ "${2:-}" = sess ] && cmd=(pre RESIL_SESSION="$SESS" "${cmd[@]}")
		measure "${cmd[@]}" 2>/dev/null | awk -F'"' \
			'$2 == "GET" { print $4; found = 1 } END { exit !found }'
	}
	ab_row "redis-benchmark -k 0 -c 10 GET, a session per request (req/s)" \
		measured "redis-benchmark failed" "rk $P_REDIS" "rk $P_SREDIS sess"
fi
sstart $P_SHOLD hold
so=() ss_=() mo=() ms=() fs=0 ok=1
for ((r = 0; r < REPS; r++)); do
	out=$(measure "$B" scale $LIVE $P_HOLD $N_SCALE) || { ok=0; break; }
	read -r a b c d <<<"$out"; so+=("$a") mo+=("$b")
	out=$(spre "$B" scale $LIVE $P_SHOLD $N_SCALE) || { ok=0; break; }
	read -r a b c d <<<"$out"; ss_+=("$a") ms+=("$b")
	fs=$((fs + d))
done
if [ $ok = 1 ]; then
	row "scale: $N_SCALE sessions open (ms)" "$(cell "${so[@]}")" \
		"$(cell "${ss_[@]}")" "$(pratio ss_ so)" "10,000 in one process"
	row "scale: client RSS per idle session (anon, bytes)" \
		"$(cell "${mo[@]}")" "$(cell "${ms[@]}")" "$(awk \
		-v a="$(median "${ms[@]}")" -v b="$(median "${mo[@]}")" \
		'BEGIN { printf "%+.0f B", a - b }')" "<= 4 KiB"
	row "scale: failed session connect/write/echo, all runs" "" "$fs" "" "0"
else
	na "scale: $N_SCALE sessions open (ms)" "" "the scale client failed"
fi

# ---- the table ----------------------------------------------------------
echo
{
	echo "measure|plain|libresil|ratio|target"
	printf '%s\n' "${ROWS[@]}"
} | awk -F'|' '
	{ for (i = 1; i <= NF; i++) { c[NR, i] = $i
	      if (length($i) > w[i]) w[i] = length($i) } }
	END {
		for (r = 1; r <= NR; r++) {
			line = ""
			for (i = 1; i <= 5; i++)
				line = line sprintf(i < 5 ? "%-*s | " : "%-*s",
				                    w[i], c[r, i])
			sub(/ +$/, "", line); print line
			if (r == 1) {
				line = ""
				for (i = 1; i <= 5; i++) {
					d = sprintf("%*s", w[i], ""); gsub(/ /, "-", d)
					line = line d (i < 5 ? "-|-" : "")
				}
				print line
			}
		}
	}'
echo
echo "ratio = libresil / plain: the median of the per-repetition ratios (each of"
echo "the $REPS repetitions runs plain and libresil back to back), in brackets their"
echo "min-max; against a single plain run (a timeout), libresil's median over it."
echo "+-N% = (max-min)/median of the repetitions."
echo "Rates: higher is better; times: lower is better. \"both ends\" = the"
echo "server preloaded too (in plain TCP mode unless the row says session mode: it measures the hooks)."
exit $FAILED
