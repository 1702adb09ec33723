# What the network scenario scripts (run.sh, fabric.sh, session.sh) share:
# the counters and their helpers, the check that libresil is built, the
# test bed (scripts/testbed.sh), a work directory and the exit handler.
# Source it once the script has set SUITE (the name its summary line
# starts with and its work directory's), BUILD, LIB, HERE and ROOT; the
# script sets FINISHED=1 once it printed its own summary. A run that
# stops before (a failed bed, an error, a signal) counts one failure and
# keeps its logs; a run without failures removes WORK unless KEEP is set.
# The test bed is torn down either way.
PASS=0
FAIL=0
pass() { PASS=$((PASS + 1)); echo "PASS  $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL  $*"; }
info() { echo "INFO  $*"; }
check() { # check COND_RC DESCRIPTION
    if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2"; fi
}
now_ms() { local t=$EPOCHREALTIME; echo $(( ${t/./} / 1000 )); }

if [ ! -f "$LIB" ]; then
    fail "setup: $BUILD/libresil.so not found (run make)"
    echo "$SUITE: $PASS passed, $FAIL failed"; exit 1
fi

# shellcheck source=../../scripts/testbed.sh
. "$ROOT/scripts/testbed.sh"

WORK=$(mktemp -d "/tmp/resil-$SUITE.XXXXXX")
FINISHED=0

on_exit() {
    local rc=$?
    tb_down
    if [ "$FINISHED" = 0 ]; then
        FAIL=$((FAIL + 1))
        echo "FAIL  run aborted (exit $rc); logs kept in $WORK"
        echo "$SUITE: $PASS passed, $FAIL failed"
        exit 1
    fi
    [ "$FAIL" -eq 0 ] && [ -z "${KEEP:-}" ] && rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
