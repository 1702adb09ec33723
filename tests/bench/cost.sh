#!/bin/bash
# tests/bench/cost.sh BUILD: what libresil costs a program that makes no
# use of it, in instructions, checked against DESIGN.md's targets.
#
# callgrind counts every instruction the process runs, and the count is
# the same on every run of the same binary (no timing in it), so unlike
# `make bench` these are checks that cannot flake:
#   - an unmanaged call (pipe write+read): runs of N and 2N pairs cancel
#     start-up and exit, the difference over 2N calls is one call; plain and
#     preloaded in turn, the difference is the hook's. With the table empty
#     and with it in use (a managed TCP socket open);
#   - process start+exit of /bin/true, preloaded minus plain;
#   - a connect+close to a two-address group whose first address answers
#     (no race starts), blocking and non-blocking, in the program's own
#     thread (the engine's thread, which a connect may start, runs on its
#     own schedule), preloaded minus plain.
# One line per check; the last line is "cost: N passed, M failed"; exit
# status 1 when a check failed.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
LIB=$BUILD/libresil.so
PROG=$BUILD/bench/calls
N=10000
CALL_MAX=16     # DESIGN.md: <= 16 extra instructions (the floor is ~12)
# Not a DESIGN.md figure: a tripwire. Mapping any preloaded library costs
# about 10,000 instructions here; resolving every real function at start
# and binding every import at load (-z now) cost 150,000.
START_MAX=40000
# Not a DESIGN.md figure either: a tripwire. In this loop a connect+close
# to a group cost +7,481 to +7,630 (blocking) and +5,975 (non-blocking)
# instructions in the program's thread until both caches were looked up
# once per connect (session 17: +3,991 and +3,423).
CONNECT_MAX=5000
NC=500
PASS=0 FAIL=0

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1"; }

[ -f "$LIB" ] || { echo "cost: $LIB not built" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "cost: valgrind not found" >&2; exit 1; }
mkdir -p "$BUILD/bench"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$PROG" \
    "$ROOT/tests/bench/calls.c" || { echo "cost: cannot build calls.c" >&2; exit 1; }

ir() { # [pre] CMD...: instructions the process ran
    local pre=(env -u LD_PRELOAD)
    if [ "$1" = pre ]; then pre=(env LD_PRELOAD="$LIB"); shift; fi
    "${pre[@]}" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$@" 2>&1 | awk '/Collected :/ { print $NF; found = 1 }
        END { exit !found }'
}

per_call() { # [pre] [tcp]: instructions of one call, to one decimal
    local a b
    a=$(ir "$@" "$PROG" $N "${TCP[@]}") && b=$(ir "$@" "$PROG" $((2 * N)) "${TCP[@]}") &&
        awk -v a="$a" -v b="$b" -v n=$((2 * N)) 'BEGIN { printf "%.1f", (b - a) / n }'
}

for mode in empty tcp; do
    TCP=()
    what="table empty"
    if [ $mode = tcp ]; then TCP=(tcp); what="a managed socket open"; fi
    if p=$(per_call) && r=$(per_call pre); then
        d=$(awk -v a="$r" -v b="$p" 'BEGIN { printf "%.1f", a - b }')
        m="unmanaged call, $what: +$d instructions ($p plain, $r preloaded; <= +$CALL_MAX)"
        if awk -v d="$d" -v m=$CALL_MAX 'BEGIN { exit !(d <= m) }'; then
            ok "$m"
        else
            bad "$m"
        fi
    else
        bad "unmanaged call, $what: callgrind failed"
    fi
done

if p=$(ir /bin/true) && r=$(ir pre /bin/true); then
    m="process start+exit, /bin/true: +$((r - p)) instructions ($p plain, $r preloaded; <= +$START_MAX)"
    if [ $((r - p)) -le $START_MAX ]; then ok "$m"; else bad "$m"; fi
else
    bad "process start+exit: callgrind failed"
fi

# shellcheck source=tests/bench/ir.sh
. "$ROOT/tests/bench/ir.sh"
for mode in blk nb; do
    how=blocking nb=()
    [ $mode = nb ] && how=non-blocking nb=(nb)
    if p=$(ir_per $NC -- "$PROG" @N connect "${nb[@]}") &&
        r=$(ir_per $NC LD_PRELOAD="$LIB" RESIL_ALTERNATES=127.0.0.1,127.0.0.2 \
            -- "$PROG" @N connect "${nb[@]}"); then
        m="connect+close $how, group, first alive: +$((r - p)) instructions in the program's thread ($p plain, $r preloaded; <= +$CONNECT_MAX)"
        if [ $((r - p)) -le $CONNECT_MAX ]; then ok "$m"; else bad "$m"; fi
    else
        bad "connect+close $how: callgrind failed"
    fi
done

echo "cost: $PASS passed, $FAIL failed"
[ $FAIL = 0 ]
