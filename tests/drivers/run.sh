#!/bin/bash
# Preload drivers: run every driver subtest as its own process inside a
# private network namespace, with libresil preloaded into that process only.
#
#   tests/drivers/run.sh BUILD        (BUILD holds libresil.so and drivers/)
#   ONLY=monitor/ tests/drivers/run.sh BUILD   (the matching subtests)
#   RESIL_SAN=1 tests/drivers/run.sh build-asan
#                                     (libresil built with ASan + UBSan: the
#                                      runtimes are preloaded in front of it)
#   RESIL_SAN=tsan tests/drivers/run.sh build-tsan
#                                     (libresil and the drivers built with
#                                      ThreadSanitizer: its runtime is
#                                      preloaded behind libresil, and only
#                                      the runs with libresil are made)
#
# The namespace: lo up; nftables drops (in the output hook, so silently)
# everything to 127.0.0.66-68 and fd00:66::1 (local on lo, so routable):
# those are the dead addresses. 127.0.0.1 and ::1 are live; nothing listens
# on 127.0.0.2/3, so a connect there is refused. It is removed on exit,
# whatever happens. Not being able to create it is a failure, never a skip.
#
# Prints one line per test and ends with "drivers: N passed, M failed";
# exits non-zero when anything failed.
set -u

BUILD=${1:?usage: $0 BUILD}
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || {
    echo "run.sh: no build directory $1" >&2
    echo "drivers: 0 passed, 1 failed"
    exit 1
}
DRV=$BUILD/drivers
LIB=$BUILD/libresil.so
NS=resil-drv-$$
TMP=$(mktemp -d /tmp/resil-drivers.XXXXXX)
PASS=0
FAIL=0
FAILED=()

ALT="127.0.0.66,127.0.0.1;127.0.0.67,127.0.0.68;127.0.0.2,127.0.0.3;fd00:66::1,::1"

cleanup() {
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bail() {
    echo "FAIL setup: $*"
    echo "drivers: $PASS passed, $((FAIL + 1)) failed"
    exit 1
}

for f in "$LIB" "$DRV/early_main"; do
    [ -e "$f" ] || bail "$f missing (make drivers)"
done

# What goes in front of the driver: libresil, with the sanitizer runtimes
# first when libresil was built with them (they must be the first objects).
SAN_ENV=()
PRELOAD=$LIB
if [ "${RESIL_SAN:-0}" = 1 ]; then
    CCBIN=${CC:-gcc}
    ASAN=$($CCBIN -print-file-name=libasan.so)
    UBSAN=$($CCBIN -print-file-name=libubsan.so)
    [ -e "$ASAN" ] && [ -e "$UBSAN" ] || bail "sanitizer runtimes not found"
    PRELOAD="$ASAN $UBSAN $LIB"
    SAN_ENV=(ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0:abort_on_error=0
             UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
    # the runs without libresil are the plain build's (the drivers are
    # not instrumented): run again here they would check nothing new
    NO_PLAIN=1
elif [ "${RESIL_SAN:-0}" = tsan ]; then
    TSAN=$(${CC:-gcc} -print-file-name=libtsan.so)
    [ -e "$TSAN" ] || bail "libtsan.so not found"
    # libresil in front of TSan's runtime: the program's poll() or
    # epoll_wait() must reach libresil's hook first, which then calls
    # TSan's interceptor through real.X. The other way round, libresil's
    # hook runs inside TSan's blocking-call interceptor, where TSan ignores
    # the interceptors libresil calls (its mutex locks included) and then
    # reports the accesses those locks order as races.
    PRELOAD="$LIB $TSAN"
    # halt_on_error + exitcode: the first report fails the subtest (the
    # drivers are instrumented too: their own reports count).
    # second_deadlock_stack: a lock-order report names both acquisitions.
    # atexit_sleep_ms: TSan's default sleeps 1 s in every exit, to let
    # other threads race with it: 167 s of the CI run's 15 minutes went
    # there. 50 ms still lets the engine thread run against the exit's
    # destructors (linger_exit).
    # die_after_fork=0: TSan by default kills a child of a multi-threaded
    # fork that starts a thread, and libresil's child starts its engine
    # thread to race; TSan's runtime takes its own locks around fork (its
    # allocator is fork-safe, unlike gcc 12's ASan: the fork subtests
    # skipped under ASan run here, and pass).
    SAN_ENV=(TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1:die_after_fork=0:atexit_sleep_ms=50
             DRV_TSAN=1)
    # Only the runs with libresil (resil and bare): without it TSan would
    # check nothing of ours (the plain runs prove the drivers'
    # expectations against the kernel, which the uninstrumented run does).
    NO_PLAIN=1
fi

ip netns add "$NS" || bail "cannot create network namespace $NS (root?)"
ip -n "$NS" link set lo up || bail "lo up"
ip -n "$NS" -6 addr add fd00:66::1/128 dev lo nodad ||
    bail "cannot add fd00:66::1"
ip netns exec "$NS" nft -f - <<'EOF' || bail "nftables rules"
table inet resil_drivers {
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr { 127.0.0.66, 127.0.0.67, 127.0.0.68 } drop
        ip6 daddr fd00:66::1 drop
    }
}
EOF

# run NAME resil|bare|plain|plainfail TIMEOUT [VAR=value...] -- COMMAND...
#   resil      libresil preloaded; passes when COMMAND exits 0
#   bare       the same with no RESIL_ variable in the environment: the
#              configuration is then the defaults, taken when a hook first
#              needs it rather than at start-up (shim/init.c)
#   plain      no libresil; passes when COMMAND exits 0
#   plainfail  no libresil; passes when COMMAND fails (the test bed really
#              breaks what libresil is supposed to fix)
run() {
    local name=$1 mode=$2 tmo=$3
    shift 3
    # ONLY=REGEX: only the subtests whose name matches (while working on
    # one; the checks after the runs are then left out)
    [ -z "${ONLY:-}" ] || [[ $name =~ $ONLY ]] || return 0
    local envs=()
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    [ -n "${NO_PLAIN:-}" ] && [[ $mode = plain* ]] && return 0
    local pre=(DRV_PRELOADED=0)
    if [ "$mode" = resil ]; then
        pre=(LD_PRELOAD="$PRELOAD" DRV_PRELOADED=1 "${SAN_ENV[@]}"
             RESIL_LOG_LEVEL=2 RESIL_ALTERNATES="$ALT")
    elif [ "$mode" = bare ]; then
        pre=(LD_PRELOAD="$PRELOAD" DRV_PRELOADED=1 "${SAN_ENV[@]}")
    fi
    local log=$TMP/log.$((PASS + FAIL))
    local t0 t1 rc ok
    t0=$(date +%s%N)
    ip netns exec "$NS" timeout -k 2 "$tmo" \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/tmp \
        "${pre[@]}" "${envs[@]}" "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    local ms=$(((t1 - t0) / 1000000))
    case $mode in
    plainfail) [ $rc -ne 0 ] && ok=1 || ok=0 ;;
    *) [ $rc -eq 0 ] && ok=1 || ok=0 ;;
    esac
    local what=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && what=" (timed out after ${tmo}s)"
    if [ $ok = 1 ]; then
        PASS=$((PASS + 1))
        if [ "$mode" = plainfail ]; then
            printf 'PASS %-44s %5d ms (fails without libresil, rc %d)\n' \
                "$name" "$ms" "$rc"
        else
            printf 'PASS %-44s %5d ms\n' "$name" "$ms"
        fi
        grep -h '^note:' "$log" | sed 's/^/     /'
    else
        FAIL=$((FAIL + 1))
        FAILED+=("$name")
        printf 'FAIL %-44s %5d ms rc %d%s\n' "$name" "$ms" "$rc" "$what"
        if [ "$mode" = plainfail ]; then
            echo "     (expected this to fail without libresil)"
        fi
        sed -n '1,40p' "$log" | sed 's/^/     | /'
    fi
}

# every subtest of a driver, one process each
run_all() {
    local drv=$1 mode=$2 tmo=$3
    shift 3
    local t
    for t in $("$DRV/$drv" list); do
        if [ -n "${SKIP[$drv/$t]:-}" ]; then
            echo "SKIP $drv/$t: ${SKIP[$drv/$t]}"
            continue
        fi
        # shellcheck disable=SC2086
        run "$drv/$t${SUFFIX:-}" "$mode" "$tmo" "$@" ${TENV[$drv/$t]:-} \
            -- "$DRV/$drv" "$t"
    done
}

# Subtests that need a setting of their own (the driver says why).
declare -A TENV=(
    [first_hidden/late_fail_engine]="RESIL_ATTEMPT_DELAY_MS=750"
)

# Subtests that cannot work under the sanitizers, with the reason.
declare -A SKIP=()
if [ "${RESIL_SAN:-0}" = 1 ]; then
    # gcc 12's libasan has no fork handlers: a child forked while another
    # thread holds the ASan allocator lock deadlocks at its next
    # allocation (seen: the child's engine thread, in pthread_getattr_np's
    # free). glibc's own malloc is fork-safe, so the plain run covers it.
    # The drivers' own in-process server threads start threads of their own
    # right when a test forks, so every fork subtest can hang that way
    # (seen: fork/connect_in_child, 1 run in 6, child stuck in ASan's
    # SizeClassAllocator64 lock taken by a parent thread at fork time).
    for t in $("$DRV/fork" list); do
        SKIP[fork/$t]="ASan runtime (gcc 12) not fork-safe with threads"
    done
    # the same: its child races after a fork taken with the engine up
    SKIP[fds/close_range_unshare]="ASan runtime (gcc 12) not fork-safe"
fi

# The monitor driver (its header says why the bound differs): the dead
# address SRV_A gets a live alternate SRV_B, and an events file.
monitor_all() {
    local mode=$1 t bound suffix=""
    [ "$mode" = plain ] && suffix=/plain
    for t in $("$DRV/monitor" list); do
        case $t in
        idle_request | busy_requests | bulk) bound=10000 ;;
        *) bound=3000 ;;
        esac
        run "monitor/$t$suffix" "$mode" 30 RESIL_FAIL_TIMEOUT_MS=$bound \
            RESIL_EVENTS="$TMP/monitor.ev" \
            RESIL_ALTERNATES="$ALT;127.0.0.9,127.0.0.10" -- "$DRV/monitor" "$t"
    done
}

echo "== test bed, without libresil"
[ -n "${NO_PLAIN:-}" ] && echo "   (the plain build's runs: not again here)"
run "bed/dead-address-hangs" plain 10 -- "$DRV/race_block" dead_hang
run "bed/dead-address-hangs-v6" plain 10 -- "$DRV/race_block" dead_hang6
run "bed/dead-first-fails" plainfail 4 -- "$DRV/race_block" dead_first
run "bed/nonblock-dead-first-fails" plainfail 6 -- "$DRV/race_nonblock" poll4
SUFFIX=/plain run_all refused plain 10
SUFFIX=/plain run_all unmanaged plain 10
SUFFIX=/plain run_all fds plain 30
SUFFIX=/plain run_all epoll_exact plain 10
SUFFIX=/plain run_all semantics plain 10
SUFFIX=/plain run_all first plain 10
SUFFIX=/plain run_all session plain 10
monitor_all plain
run "early_main/plain" plain 10 -- "$DRV/early_main"
run "startup/first_calls/plain" plain 10 -- "$DRV/startup" first_calls
# preloaded with nothing for libresil in the environment (drivers whose
# checks do not depend on DRV_PRELOADED; the plain runs above say the same)
SUFFIX=/bare run_all refused bare 10
SUFFIX=/bare run_all unmanaged bare 10
SUFFIX=/bare run_all epoll_exact bare 10
run "early_main/bare" bare 10 -- "$DRV/early_main"
run "startup/first_calls/bare" bare 10 -- "$DRV/startup" first_calls

echo "== with libresil ($PRELOAD)"
run_all race_block resil 20
run "race_block/dead_hang/RESIL_RACE=0" resil 10 RESIL_RACE=0 -- \
    "$DRV/race_block" dead_hang
run "race_block/dead_hang6/RESIL_RACE=0" resil 10 RESIL_RACE=0 -- \
    "$DRV/race_block" dead_hang6
run_all race_nonblock resil 20
run_all refused resil 20
run_all semantics resil 20
# the first attempt on the program's own socket (first.c, first_hidden.c
# say which groups they need); first_hidden has no plain run: without
# libresil the program sees the refusals it hides (refused/ checks them)
ALT_FIRST="$ALT;127.0.0.7,127.0.0.68;127.0.0.4,127.0.0.68,127.0.0.1"
ALT_FIRST+=";127.0.0.13,127.0.0.8,127.0.0.9,127.0.0.11,127.0.0.12,127.0.0.1"
run_all first resil 20 RESIL_ALTERNATES="$ALT_FIRST"
run_all first_hidden resil 20 RESIL_ALTERNATES="$ALT_FIRST"
# both ends of a session in the driver's process (its header says why)
run_all session resil 20 RESIL_SESSION=127.0.0.1:7470 \
    RESIL_EVENTS="$TMP/session.ev"
run_all threads resil 60
# without the health cache every dead-first connect really waits out its
# dead first attempt: 16 concurrent races at all times
SUFFIX=/no-health-cache run_all threads resil 60 RESIL_HEALTH_TTL_MS=0
run_all fork resil 60
run_all epoll_exact resil 20
# no plain run: without libresil the program sees the reset the re-race
# hides
run_all epoll_rerace resil 20
monitor_all resil
# unmanaged: no alternates at all, so TCP to one address is pass-through
run_all unmanaged resil 20 RESIL_ALTERNATES=
# with a log and an events file, so that those descriptors exist too
run_all fds resil 30 RESIL_EVENTS="$TMP/fds-events" \
    RESIL_LOG_FILE="$TMP/fds-log"
# no plain run of clearenv_race: the plain connect to the dead address hangs
run_all startup resil 20
run "early_main/race-in-constructor" resil 20 EARLY_DEAD=1 -- \
    "$DRV/early_main"

if [ -n "${ONLY:-}" ]; then
    [ $FAIL -eq 0 ] || echo "failed: ${FAILED[*]}"
    echo "drivers: $PASS passed, $FAIL failed (ONLY=$ONLY)"
    [ $FAIL -eq 0 ]
    exit
fi

# The early test only means something if libearly's constructor really runs
# before libresil's (LD_DEBUG=files lists initializers in call order).
run "early_main/constructor-order" resil 20 LD_DEBUG=files -- \
    "$DRV/early_main"
order=$(grep -o 'calling init: [^ ]*' "$TMP/log.$((PASS + FAIL - 1))" |
    grep -E 'libearly|libresil' | sed 's/.*\///' | tr '\n' ' ')
case $order in
"libearly.so libresil.so ")
    PASS=$((PASS + 1))
    echo "PASS early_main/libearly-init-runs-first" ;;
*)
    FAIL=$((FAIL + 1))
    FAILED+=(early_main/libearly-init-runs-first)
    echo "FAIL early_main/libearly-init-runs-first: init order: $order" ;;
esac

# RESIL_EVENTS: the race writes a JSON line naming the winner
EV=/tmp/resil-drv-events.$$
rm -f "$EV"
run "events/connect-line" resil 20 RESIL_EVENTS="$EV" -- \
    "$DRV/race_block" dead_first
if grep -q '"event":"connect".*"winner":"127.0.0.1"' "$EV" 2>/dev/null; then
    PASS=$((PASS + 1))
    echo "PASS events/winner-recorded"
else
    FAIL=$((FAIL + 1))
    FAILED+=(events/winner-recorded)
    echo "FAIL events/winner-recorded: $(head -c 400 "$EV" 2>&1)"
fi
rm -f "$EV"

[ $FAIL -eq 0 ] || echo "failed: ${FAILED[*]}"
echo "drivers: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
