#!/bin/bash
# tests/tools/run.sh BUILD_DIR: resil-run, resil-entrypoint, --stats, the
# events file and make install/uninstall, against real programs (curl,
# python3, nc, a small C client). One line per check; the last line is
# "tools: N passed, M failed"; exit status 1 when a check failed.
# Needs: curl, /usr/bin/python3, nc, gcc, readelf; root for the setuid and
# chroot checks (skipped otherwise, and counted as neither).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
LIB=$BUILD/libresil.so
RUN=$ROOT/scripts/resil-run
ENTRY=$ROOT/scripts/resil-entrypoint
PY=/usr/bin/python3
T=$(mktemp -d /tmp/resil-tools.XXXXXX)
PASS=0 FAIL=0 SKIP=0
SRV_PID=

cleanup() {
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() {
    FAIL=$((FAIL + 1)); echo "FAIL - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | head -n 15 | sed 's/^/       | /'
    return 0
}
skip() { SKIP=$((SKIP + 1)); echo "skip - $1"; }
check() { # check NAME CONDITION-COMMAND... ; output of $OUT shown on failure
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name" "${OUT:-}"; fi
}
has() { grep -q -- "$2" "$1"; }
# t SECONDS CMD...: every program run by a check gets a timeout
t() { local s=$1; shift; timeout -k 2 "$s" "$@"; }

if [ ! -f "$LIB" ]; then
    echo "FAIL - $LIB not built"
    echo "tools: 0 passed, 1 failed"
    exit 1
fi

# ---- fixtures -----------------------------------------------------------------
gcc -O2 -o "$T/client" "$ROOT/tests/tools/client.c" 2>"$T/gcc.err"
gcc -O2 -o "$T/gofake" "$ROOT/tests/tools/gofake.c" 2>>"$T/gcc.err"
if ! gcc -O2 -static -o "$T/client-static" "$ROOT/tests/tools/client.c" \
    2>>"$T/gcc.err"; then
    rm -f "$T/client-static"
    command -v busybox >/dev/null && file -L "$(command -v busybox)" |
        grep -q static && cp "$(command -v busybox)" "$T/client-static"
fi
$PY "$ROOT/tests/tools/server.py" "$T/port" &
SRV_PID=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
PORT=$(cat "$T/port" 2>/dev/null)
if [ -z "$PORT" ]; then
    echo "FAIL - test HTTP server did not start"
    echo "tools: 0 passed, 1 failed"
    exit 1
fi
# A race: nothing listens on 127.0.0.2:PORT, the group adds 127.0.0.1.
ALT=127.0.0.2,127.0.0.1
URL=http://127.0.0.2:$PORT/

# ---- resil-run basics -----------------------------------------------------------
OUT=$(t 10 "$RUN" --help 2>&1)
check "--help shows usage and examples" \
    grep -q 'Examples:' <<<"$OUT"
OUT=$(t 10 "$RUN" --version 2>&1)
check "--version names the build-tree library" \
    grep -qx "library: $LIB" <<<"$OUT"

OUT=$(t 20 "$RUN" -e "$T/curl.json" -a "$ALT" curl -sS -o /dev/null \
    -w '%{http_code}' "$URL" 2>&1)
check "curl under resil-run: request to the dead address succeeds" \
    test "$OUT" = 200
OUT=$(cat "$T/curl.json" 2>&1)
check "curl: events file has the race (tried both, 127.0.0.1 won)" \
    grep -q '"event":"connect".*"tried":\["127.0.0.2","127.0.0.1"\].*"winner":"127.0.0.1"' <<<"$OUT"

OUT=$(t 20 "$RUN" -l debug -e "$T/py.json" -a "$ALT" $PY -c "
import urllib.request
print(urllib.request.urlopen('$URL').status)" 2>&1)
check "python3: debug log says the library loaded, request works" \
    eval 'grep -q "libresil\[[0-9]*\]: debug: loaded" <<<"$OUT" &&
          grep -qx 200 <<<"$OUT"'
OUT=$(cat "$T/py.json" 2>&1)
check "python3: events file has a connect won by 127.0.0.1" \
    grep -q '"event":"connect".*"winner":"127.0.0.1"' <<<"$OUT"

OUT=$(printf 'GET / HTTP/1.0\r\n\r\n' |
    t 20 "$RUN" -e "$T/nc.json" -a "$ALT" nc -N 127.0.0.2 "$PORT" 2>&1)
check "nc: request to the dead address answered" \
    grep -q '^HTTP/1.0 200' <<<"$OUT"
OUT=$(cat "$T/nc.json" 2>&1)
check "nc: events file has a connect won by 127.0.0.1" \
    grep -q '"event":"connect".*"winner":"127.0.0.1"' <<<"$OUT"

OUT=$(t 10 "$RUN" sh -c 'exit 7' 2>&1)
rc=$?
check "exit status is the program's own (7)" test "$rc" = 7
OUT=$(t 10 "$RUN" no-such-command-xyz 2>&1)
rc=$?
check "unknown command: status 127 and a message" \
    eval '[ $rc = 127 ] && grep -q "command not found" <<<"$OUT"'
OUT=$(t 10 "$RUN" --bogus true 2>&1)
rc=$?
check "unknown option: status 2" test "$rc" = 2

# An existing preload stays, in front of libresil, and both are mapped.
Z=$(ldconfig -p | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
[ -n "$Z" ] || Z=$(ldd /usr/bin/curl | awk '/libz\.so/ {print $3; exit}')
OUT=$(LD_PRELOAD=$Z t 10 "$RUN" $PY -c '
import os
print(os.environ["LD_PRELOAD"])
print(open("/proc/self/maps").read())' 2>&1)
check "existing LD_PRELOAD kept: $Z:libresil.so, both mapped" \
    eval 'grep -qx "$Z:$LIB" <<<"$OUT" &&
          grep -q "${Z##*/}" <<<"$(sed 1d <<<"$OUT")" &&
          grep -q "libresil.so" <<<"$(sed 1d <<<"$OUT")"'
OUT=$(LD_PRELOAD="$LIB $Z" t 10 "$RUN" sh -c 'echo "$LD_PRELOAD"' 2>&1)
check "libresil already in LD_PRELOAD is not added twice" \
    test "$OUT" = "$Z:$LIB"

# ---- refusals and warnings ------------------------------------------------------
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    cp /usr/bin/true "$T/suid-true"
    chown nobody "$T/suid-true"
    chmod 4755 "$T/suid-true"
    OUT=$(t 10 "$RUN" "$T/suid-true" 2>&1)
    rc=$?
    check "setuid target refused: status 126 and a clear message" \
        eval '[ $rc = 126 ] && grep -q "is setuid, so the dynamic loader ignores LD_PRELOAD" <<<"$OUT"'
    cp /usr/bin/true "$T/sgid-true"
    chgrp "$(id -gn nobody)" "$T/sgid-true"
    chmod 2755 "$T/sgid-true"
    OUT=$(t 10 "$RUN" "$T/sgid-true" 2>&1)
    rc=$?
    check "setgid target refused: status 126" \
        eval '[ $rc = 126 ] && grep -q "is setgid" <<<"$OUT"'
    cp /usr/bin/true "$T/own-suid-true"
    chmod 4755 "$T/own-suid-true"
    OUT=$(t 10 "$RUN" "$T/own-suid-true" 2>&1)
    rc=$?
    check "setuid to the caller's own uid runs (no secure mode)" \
        test "$rc" = 0
else
    skip "setuid/setgid refusal (needs root and user nobody)"
fi

if [ -x "$T/client-static" ]; then
    OUT=$(t 20 "$RUN" -a "$ALT" "$T/client-static" 127.0.0.1 "$PORT" 2>&1)
    rc=$?
    check "static binary: warning that says what to do, program still runs" \
        eval '[ $rc = 0 ] && grep -q "is statically linked; LD_PRELOAD cannot reach it" <<<"$OUT" &&
              grep -q "local forwarder" <<<"$OUT" && grep -q "HTTP/1.0 200" <<<"$OUT"'
else
    skip "static binary warning (no static libc, no busybox-static)"
fi
OUT=$(t 10 "$RUN" "$T/gofake" 2>&1)
rc=$?
check "Go binary (.go.buildinfo): warning, program still runs" \
    eval '[ $rc = 0 ] && grep -q "is a Go program" <<<"$OUT"'
OUT=$(t 10 "$RUN" "$T/client" 2>&1)
check "dynamic binary: no warning" \
    eval '! grep -q "warning" <<<"$OUT"'

# ---- on / off / show --------------------------------------------------------------
OUT=$(cd "$ROOT" && LD_PRELOAD=$Z t 10 bash -c '
. scripts/resil-run -e /tmp/x.json on >/dev/null
echo "on:$LD_PRELOAD:$RESIL_EVENTS"
. scripts/resil-run show
. scripts/resil-run off >/dev/null
echo "off:$LD_PRELOAD"
. scripts/resil-run show
set | grep -c "^_resil" ; declare -F | grep -c "_resil"
LD_PRELOAD=
. scripts/resil-run on >/dev/null; . scripts/resil-run off >/dev/null
echo "unset:${LD_PRELOAD-UNSET}"
' 2>&1)
check "'. resil-run on' appends libresil and sets options in the shell" \
    grep -qx "on:$Z:$LIB:/tmp/x.json" <<<"$OUT"
check "'. resil-run show' reports on, LD_PRELOAD and RESIL_*" \
    eval 'grep -qx "libresil is on" <<<"$OUT" &&
          grep -qx "LD_PRELOAD=$Z:$LIB" <<<"$OUT" &&
          grep -qx "RESIL_EVENTS=/tmp/x.json" <<<"$OUT"'
check "'. resil-run off' removes only libresil" \
    eval 'grep -qx "off:$Z" <<<"$OUT" && grep -qx "libresil is off" <<<"$OUT"'
check "off with nothing else preloaded unsets LD_PRELOAD" \
    grep -qx "unset:UNSET" <<<"$OUT"
check "sourcing leaves no _resil_ variables or functions behind" \
    test "$(grep -xc 0 <<<"$OUT")" = 2
OUT=$(t 10 "$RUN" on 2>&1)
rc=$?
check "'resil-run on' unsourced: status 2, says to source it" \
    eval '[ $rc = 2 ] && grep -q "must be sourced" <<<"$OUT"'
OUT=$(SHELL=/bin/sh t 10 "$RUN" --shell <<<'echo "in:$LD_PRELOAD"; exit 4' 2>&1)
rc=$?
check "--shell starts \$SHELL with libresil, its status returned" \
    eval '[ $rc = 4 ] && grep -qx "in:$LIB" <<<"$OUT"'

# ---- --stats --------------------------------------------------------------------------
cat >"$T/scripted.json" <<'EOF'
{"ts":1.0,"pid":10,"fd":5,"event":"connect","port":6379,"tried":["10.0.1.5"],"winner":"10.0.1.5","ms":0.4,"name":""}
{"ts":2.0,"pid":10,"fd":6,"event":"connect","port":6379,"tried":["10.0.1.5","10.0.2.5"],"winner":"10.0.2.5","ms":250.8,"name":""}
{"ts":3.0,"pid":10,"fd":6,"event":"path_stall","peer":"10.0.2.5:6379","unacked":3,"last_ack_ms":1500}
{"ts":4.0,"pid":11,"fd":7,"event":"connect","port":6379,"tried":["10.0.2.5","10.0.1.5"],"winner":"10.0.1.5","ms":251.0,"name":""}
{"ts":5.0,"pid":12,"fd":5,"event":"connect","port":443,"tried":["2001:db8::1","192.0.2.1"],"winner":"192.0.2.1","ms":260.1,"name":"api.example"}
{"ts":5.5,"pid":12,"fd":5,"event":"rerace","port":443,"tried":["2001:db8::1","192.0.2.1"],"winner":"2001:db8::1","ms":12.5,"name":"api.example"}
{"ts":6.0,"pid":12,"fd":8,"event":"connect_failed","port":443,"tried":["2001:db8::1","192.0.2.1"],"errno":"ETIMEDOUT","ms":10000.0}
{"ts":7.0,"pid":12,"fd":5,"event":"resume","old":"192.0.2.1:443","new":"[2001:db8::1]:443","bytes_replayed":4096,"ms":180.2}
{"ts":8.0,"pid":12,"fd":5,"event":"resume","old":"[2001:db8::1]:443","new":"192.0.2.1:443","bytes_replayed":100,"ms":300.0}
this line is not JSON
EOF
cat >"$T/stats.want" <<'EOF'
10.0.1.5:6379 10.0.2.5:6379
  connects     3 ok, 0 failed; 2 raced, 2 won by a later address
  connect ms   median 250.8  max 251.0
  won by       10.0.1.5                     2
  won by       10.0.2.5                     1
  failovers    1 path stalls, 0 re-races, 0 resumes
api.example:443
  connects     1 ok, 1 failed; 1 raced, 1 won by a later address
  connect ms   median 260.1  max 260.1
  won by       192.0.2.1                    1
  won by       2001:db8::1                  1
  failovers    0 path stalls, 1 re-races, 2 resumes
  re-race ms   median 12.5  max 12.5
  resume ms    median 240.1  max 300.0  (4196 bytes replayed)
unreadable lines: 1
EOF
OUT=$(t 10 "$RUN" --stats "$T/scripted.json" 2>&1)
check "--stats: per-destination counts, winners, failovers, times" \
    eval 'diff -u "$T/stats.want" - <<<"$OUT" >"$T/stats.diff" ||
          { OUT=$(cat "$T/stats.diff"); false; }'
OUT=$(t 10 "$RUN" --stats "$T/curl.json" "$T/py.json" "$T/nc.json" 2>&1)
check "--stats on real events: 3 connects to 127.0.0.2 (dst), all won by 127.0.0.1" \
    eval 'grep -qx "127.0.0.2:$PORT" <<<"$OUT" &&
          grep -q "connects     3 ok, 0 failed" <<<"$OUT" &&
          grep -Eq "won by +127.0.0.1 +3" <<<"$OUT"'
check "--stats on real events: each attempt's path (lo) and the delay armed" \
    eval 'grep -qx "  attempts via lo 6 (3 won)" <<<"$OUT" &&
          grep -qx "  delay ms     median 250.0  min 250.0  max 250.0  (3 armed)" <<<"$OUT"'
cat >"$T/fabric.json" <<'EOF'
{"ts":1.0,"pid":10,"fd":5,"event":"connect","dst":"","name":"svc","port":80,"tried":["fd00:1::2","10.0.2.2"],"paths":["u1","u2"],"delays_ms":[250.0,250.0],"winner":"10.0.2.2","ms":251.0}
{"ts":2.0,"pid":10,"fd":6,"event":"connect","dst":"","name":"svc","port":80,"tried":["10.0.2.2"],"paths":["u2"],"delays_ms":[10.0],"winner":"10.0.2.2","ms":0.3}
{"ts":3.0,"pid":10,"fd":7,"event":"connect","dst":"","name":"svc","port":80,"tried":["fd00:1::2","10.0.2.2"],"paths":["u1","u2"],"delays_ms":[10.0,10.0],"winner":"10.0.2.2","ms":10.5}
{"ts":4.0,"pid":10,"fd":8,"event":"connect_failed","dst":"","name":"svc","port":80,"tried":["fd00:1::2","10.0.1.2","fd00:2::2"],"paths":["u1","","u2"],"delays_ms":[10.0,12.5,10.0],"errno":"ETIMEDOUT","rerace":false,"ms":3000.0}
EOF
cat >"$T/fabric.want" <<'EOF'
svc:80
  connects     3 ok, 1 failed; 2 raced, 2 won by a later address
  connect ms   median 10.5  max 251.0
  won by       10.0.2.2                     3
  attempts via u1 3 (0 won), u2 4 (3 won), ? 1 (0 won)
  delay ms     median 11.2  min 10.0  max 250.0  (4 armed)
  failovers    0 path stalls, 0 re-races, 0 resumes
EOF
OUT=$(t 10 "$RUN" --stats "$T/fabric.json" 2>&1)
check "--stats: attempts per path, the attempt delays armed" \
    eval 'diff -u "$T/fabric.want" - <<<"$OUT" >"$T/fabric.diff" ||
          { OUT=$(cat "$T/fabric.diff"); false; }'

# ---- events file under concurrent writers ---------------------------------------------
OUT=$(t 60 "$RUN" -e "$T/conc.json" -a "$ALT" $PY "$ROOT/tests/tools/conc.py" \
    "$PORT" 2>&1)
rc=$?
N=$(tail -n 1 <<<"$OUT")
check "threads + forked children: every connect succeeded ($N)" \
    test "$rc" = 0
OUT=$($PY - "$T/conc.json" "${N:-0}" <<'EOF' 2>&1
import json, sys
n = bad = 0
pids = set()
for line in open(sys.argv[1], "rb"):
    n += 1
    try:
        o = json.loads(line)
        assert line.endswith(b"}\n") and o["event"] == "connect"
        pids.add(o["pid"])
    except Exception:
        bad += 1
print(f"lines={n} bad={bad} pids={len(pids)} expected={sys.argv[2]}")
sys.exit(0 if bad == 0 and str(n) == sys.argv[2] and len(pids) == 4 else 1)
EOF
)
check "events: one valid JSON line per connect, from all 4 processes ($OUT)" \
    test $? = 0

# ---- unwritable events file ----------------------------------------------------------------
OUT=$(t 20 "$RUN" -e /nonexistent/dir/ev.json -a "$ALT" curl -sS -o /dev/null \
    -w '%{http_code}' "$URL" 2>&1)
check "events path in a missing directory: program unaffected, one warning" \
    eval 'grep -q "200$" <<<"$OUT" && [ "$(grep -c "cannot open events file" <<<"$OUT")" = 1 ]'
OUT=$(t 20 "$RUN" -e /dev/full -a "$ALT" curl -sS -o /dev/null \
    -w '%{http_code}\n' "$URL" "$URL" "$URL" 2>&1)
check "events file on a full disk (/dev/full): 3 requests fine, warned once" \
    eval '[ "$(grep -c "^200$" <<<"$OUT")" = 3 ] &&
          [ "$(grep -c "events file write failed" <<<"$OUT")" = 1 ]'
touch "$T/ro.json"
chmod 0444 "$T/ro.json"
AS=()
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    chmod 0755 "$T" # root ignores file modes: write as nobody
    AS=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
fi
OUT=$(t 20 "${AS[@]}" "$RUN" -e "$T/ro.json" -a "$ALT" curl -sS \
    -o /dev/null -w '%{http_code}' "$URL" 2>&1)
check "read-only events file: program unaffected, one warning" \
    eval 'grep -q "200$" <<<"$OUT" && [ ! -s "$T/ro.json" ] &&
          [ "$(grep -c "cannot open events file" <<<"$OUT")" = 1 ]'
chmod 0700 "$T"
OUT=$(t 20 "$RUN" -l info -a "$ALT" $PY -c "
import urllib.request
for _ in range(2): urllib.request.urlopen('$URL').read()" 2>&1)
check "log level info: summary line at exit counts the connects" \
    grep -q "info: summary: 2 connects, 0 failed" <<<"$OUT"

# ---- systemd drop-in ---------------------------------------------------------------------
SD=$T/systemd
OUT=$(RESIL_SYSTEMD_DIR=$SD t 10 "$RUN" -f "$ROOT/doc/libresil.conf.example" \
    -e /var/log/resil.json enable redis-server 2>&1)
rc=$?
cat >"$T/dropin.want" <<EOF
# Written by resil-run enable; remove with: resil-run disable redis-server.service
[Service]
Environment="LD_PRELOAD=$LIB"
Environment="RESIL_CONF_FILE=$ROOT/doc/libresil.conf.example"
Environment="RESIL_EVENTS=/var/log/resil.json"
EOF
check "enable UNIT writes the drop-in (LD_PRELOAD, config, events)" \
    eval '[ $rc = 0 ] && diff -u "$T/dropin.want" "$SD/redis-server.service.d/libresil.conf" >"$T/d.diff" ||
          { OUT="$OUT$(cat "$T/d.diff")"; false; }'
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$T/units"
    printf '[Service]\nExecStart=/bin/true\n' >"$T/units/redis-server.service"
    cp -r "$SD/redis-server.service.d" "$T/units/"
    OUT=$(SYSTEMD_UNIT_PATH="$T/units:" t 20 systemd-analyze verify --man=no \
        "$T/units/redis-server.service" 2>&1)
    check "systemd-analyze verify accepts the unit with the drop-in" \
        eval '! grep -qi "libresil.conf" <<<"$OUT"'
fi
OUT=$(RESIL_SYSTEMD_DIR=$SD t 10 "$RUN" disable redis-server.service 2>&1)
check "disable UNIT removes the drop-in and its directory" \
    eval '[ ! -e "$SD/redis-server.service.d" ]'
OUT=$(RESIL_SYSTEMD_DIR=$SD t 10 "$RUN" enable '../evil' 2>&1)
rc=$?
check "enable rejects a unit name with a slash" \
    eval '[ $rc = 2 ] && [ -z "$(ls -A "$SD")" ]'

# ---- resil-entrypoint ---------------------------------------------------------------
mkdir -p "$T/ep"
cp "$LIB" "$ENTRY" "$T/ep/"
OUT=$(cd / && LD_PRELOAD=$Z RESIL_EVENTS=$T/ep.json RESIL_ALTERNATES=$ALT \
    t 10 "$T/ep/resil-entrypoint" sh -c 'echo "$LD_PRELOAD"; '"$T"'/client 127.0.0.2 '"$PORT"' 5' 2>&1)
rc=$?
check "entrypoint: library next to it appended, exec keeps status (5)" \
    eval '[ $rc = 5 ] && grep -qx "$Z:$T/ep/libresil.so" <<<"$OUT" &&
          grep -q "HTTP/1.0 200" <<<"$OUT" && grep -q "\"winner\":\"127.0.0.1\"" "$T/ep.json"'
OUT=$(RESIL_LIB=/nonexistent.so t 10 "$T/ep/resil-entrypoint" sh -c 'echo "[${LD_PRELOAD-}]"' 2>&1)
check "entrypoint: missing library -> runs without it, says so" \
    eval 'grep -qx "\[\]" <<<"$OUT" && grep -q "not found: running without libresil" <<<"$OUT"'

CHROOT=$(command -v chroot)
if [ "$(id -u)" = 0 ] && [ -n "$CHROOT" ]; then
    # A minimal "image": /bin/sh, an application, glibc; no c-ares in it
    # (libresil links c-ares statically, so none is copied either).
    R=$T/root
    mkdir -p "$R/bin" "$R/app" "$R/opt/libresil" "$R/tmp"
    cp /bin/dash "$R/bin/sh"
    cp "$T/client" "$R/app/client"
    for f in $(ldd /bin/dash "$T/client" |
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\/.*[^:]$/) print $i }' |
        sort -u); do
        mkdir -p "$R${f%/*}" && cp -L "$f" "$R$f"
    done
    # what the Dockerfile's COPY --from=libresil /out/ /opt/libresil/ brings
    cp "$LIB" "$ENTRY" "$R/opt/libresil/"
    OUT=$(t 20 env -i PATH=/bin RESIL_EVENTS=/tmp/ev.json \
        RESIL_ALTERNATES=$ALT RESIL_LOG_LEVEL=debug \
        "$CHROOT" "$R" /opt/libresil/resil-entrypoint /app/client 127.0.0.2 "$PORT" 3 2>&1)
    rc=$?
    check "chroot image: entrypoint preloads libresil" \
        eval 'grep -q "debug: loaded" <<<"$OUT"'
    check "chroot image: connect raced, event written, status kept (3)" \
        eval '[ $rc = 3 ] && grep -q "HTTP/1.0 200" <<<"$OUT" &&
              grep -q "\"event\":\"connect\".*\"winner\":\"127.0.0.1\"" "$R/tmp/ev.json"'
    # The point of linking c-ares statically: an image with no c-ares
    # anywhere (not in the system paths, not next to libresil.so) still gets
    # libresil preloaded and its connects raced.
    CARES_IN_R=$(find "$R" -name 'libcares*')
    OUT=$(t 20 env -i PATH=/bin RESIL_EVENTS=/tmp/ev2.json \
        RESIL_ALTERNATES=$ALT RESIL_LOG_LEVEL=debug \
        "$CHROOT" "$R" /opt/libresil/resil-entrypoint /app/client 127.0.0.2 "$PORT" 2>&1)
    rc=$?
    check "chroot image with NO c-ares anywhere: libresil preloaded, connect raced" \
        eval '[ -z "$CARES_IN_R" ] && [ $rc = 0 ] && grep -q "debug: loaded" <<<"$OUT" &&
              ! grep -q "running without libresil" <<<"$OUT" &&
              grep -q "HTTP/1.0 200" <<<"$OUT" &&
              grep -q "\"event\":\"connect\".*\"winner\":\"127.0.0.1\"" "$R/tmp/ev2.json" ||
              { OUT="$OUT
c-ares files in the image: ${CARES_IN_R:-none}"; false; }'
    rm -f "$R/opt/libresil/libresil.so"
    OUT=$(t 20 env -i PATH=/bin "$CHROOT" "$R" /opt/libresil/resil-entrypoint \
        /app/client 127.0.0.1 "$PORT" 2>&1)
    rc=$?
    check "chroot image without the library: program runs anyway" \
        eval '[ $rc = 0 ] && grep -q "HTTP/1.0 200" <<<"$OUT" &&
              grep -q "running without libresil" <<<"$OUT"'
else
    skip "entrypoint in a chroot image (needs root)"
fi

# ---- make install / uninstall --------------------------------------------------------
D=$T/dest
OUT=$(t 120 make -C "$ROOT" --no-print-directory BUILD="$BUILD" \
    DESTDIR="$D" PREFIX=/usr install 2>&1)
rc=$?
check "make install DESTDIR=... PREFIX=/usr" test "$rc" = 0
find "$D" \( -type f -o -type l \) | sort >"$T/installed"
OUT=$(cat "$T/installed")
check "installed: lib + links, resil-run, resil-entrypoint, 2 man pages, example config" \
    eval 'for f in usr/lib/libresil.so.0.1.0 usr/lib/libresil.so.0 usr/lib/libresil.so \
                   usr/bin/resil-run usr/bin/resil-entrypoint usr/share/man/man1/resil-run.1 \
                   usr/share/man/man7/libresil.7 etc/libresil.conf.example; do
              grep -qx "$D/$f" "$T/installed" || exit 1; done'
OUT=$(grep -n "^_resil_lib" "$D/usr/bin/resil-run" 2>&1)
check "installed resil-run has the library paths substituted" \
    eval 'grep -q "_resil_libdir=.\/usr\/lib." <<<"$OUT" && grep -q "_resil_librel=.\.\.\/lib." <<<"$OUT"'
OUT=$(cd / && t 20 "$D/usr/bin/resil-run" -e "$T/inst.json" -a "$ALT" sh -c \
    'echo "$LD_PRELOAD"; exec curl -sS -o /dev/null -w "%{http_code}\n" '"$URL" 2>&1)
check "staged /tmp/x/usr/bin/resil-run runs curl with the staged library" \
    eval 'grep -qx "$D/usr/lib/libresil.so.0" <<<"$OUT" && grep -qx 200 <<<"$OUT" &&
          grep -q "\"winner\":\"127.0.0.1\"" "$T/inst.json"'
OUT=$(t 10 "$D/usr/bin/resil-run" --version 2>&1)
check "installed resil-run --version" grep -q "^resil-run (libresil) 0.1.0" <<<"$OUT"
OUT=$(t 60 make -C "$ROOT" --no-print-directory BUILD="$BUILD" \
    DESTDIR="$D" PREFIX=/usr uninstall 2>&1; find "$D" \( -type f -o -type l \))
check "make uninstall removes every installed file" \
    eval '! grep -q "^$D" <<<"$OUT"'

# Installed for real (no DESTDIR): the substituted absolute LIBDIR is used
# even by a copy of the script elsewhere.
P=$T/prefix
OUT=$(t 120 make -C "$ROOT" --no-print-directory BUILD="$BUILD" PREFIX="$P" \
    install 2>&1 && cp "$P/bin/resil-run" "$T/resil-run-copy" &&
    t 10 "$T/resil-run-copy" sh -c 'echo "$LD_PRELOAD"' 2>&1)
check "install PREFIX=...: resil-run finds \$LIBDIR/libresil.so.0 by absolute path" \
    grep -qx "$P/lib/libresil.so.0" <<<"$OUT"

echo "tools: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
