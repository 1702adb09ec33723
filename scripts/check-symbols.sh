#!/bin/sh
# Check that libresil.so exports exactly the symbols its version script names.
so="$1"; map="$2"
want=$(sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p' "$map" \
       | grep -v '^local$' | sort -u)
have=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TWiV]$/ {print $3}' \
       | sed 's/@.*//' | sort -u)
extra=$(comm -13 "/dev/fd/3" "/dev/fd/4" 3<<E1 4<<E2
$want
E1
$have
E2
)
lack=$(comm -23 "/dev/fd/3" "/dev/fd/4" 3<<E1 4<<E2
$want
E1
$have
E2
)
if [ -n "$extra$lack" ]; then
    [ -n "$extra" ] && echo "check-symbols: unexpected exports:" $extra >&2
    [ -n "$lack" ] && echo "check-symbols: missing exports:" $lack >&2
    exit 1
fi
echo "check-symbols: $(echo "$have" | wc -l) exports, as intended"
