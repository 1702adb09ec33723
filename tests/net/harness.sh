# The exit handler shared by the network scenario scripts (run.sh,
# fabric.sh, session.sh). Source it once the script has set SUITE (the
# name its summary line starts with), PASS, FAIL, WORK and FINISHED=0; the
# script sets FINISHED=1 once it printed its own summary. A run that
# stops before (a failed bed, an error, a signal) counts one failure and
# keeps its logs; a run without failures removes WORK unless KEEP is set.
# The test bed (scripts/testbed.sh) is torn down either way.
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
