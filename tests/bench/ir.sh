# shellcheck shell=bash
# tests/bench/ir.sh, sourced by run.sh (make bench) and cost.sh (make
# test): instruction counts of the program's own thread.
#
# ir_thread1 [VAR=VAL...] -- CMD...: the instructions callgrind counted in
# the first thread of CMD run with those variables set; non-zero status
# when it cannot say. A process that libresil gives its engine thread
# counts that thread apart (--separate-threads): it runs on its own
# schedule, the program's thread does not.
ir_thread1() {
	local vars=() f n
	while [ "$1" != -- ]; do vars+=("$1"); shift; done
	shift
	f=$(mktemp -u /tmp/resil-ir.XXXXXX)
	env -u LD_PRELOAD "${vars[@]}" valgrind --tool=callgrind \
		--separate-threads=yes --callgrind-out-file="$f" "$@" \
		>/dev/null 2>&1
	n=$(awk '/^summary:/ { print $2; exit }' "$f-01" 2>/dev/null)
	rm -f "$f" "$f"-*
	[ -n "$n" ] && echo "$n"
}

# ir_per N [VAR=VAL...] -- CMD...: instructions of one of N more rounds of
# CMD in its first thread: CMD is run with N and with 2N appended where
# "@N" stands in its arguments, and the difference divided by N (start-up
# and exit cancel).
ir_per() {
	local n=$1 a b args1=() args2=() x
	shift
	for x in "$@"; do
		if [ "$x" = @N ]; then
			args1+=("$n") args2+=("$((2 * n))")
		else
			args1+=("$x") args2+=("$x")
		fi
	done
	a=$(ir_thread1 "${args1[@]}") && b=$(ir_thread1 "${args2[@]}") &&
		echo $(((b - a) / n))
}
