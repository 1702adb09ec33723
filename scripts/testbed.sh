#!/bin/bash
# libresil two-uplink network test bed.
#
#   client ns  ==uplink1 (u1)==  server ns
#              ==uplink2 (u2)==
#
#   uplink N: client 10.231.N.1 / fd00:231:N::1, server 10.231.N.2 / fd00:231:N::2
#
# Names (client ns only):
#   svc.resil.test  all four server addresses, in the hosts file AND in DNS
#   one.resil.test  hosts file: only the first address (TB_FIRST);
#                   DNS (dnsmasq on 127.0.0.1:53 in the client ns): all four
#
# Failure injection drops packets silently (nftables in both namespaces, on
# ingress, so no local sender ever sees EPERM; no RST, no ICMP; ARP and
# neighbour discovery still pass, so the kernel never reports EHOSTUNREACH):
#   tb_blackhole_addr ADDR    all traffic to/from one server address
#   tb_blackhole_uplink N     both server addresses of uplink N
#   tb_link_down N            ip link set down (server end of uplink N)
#   tb_heal                   undo all of the above
#
# Use as a library (bash):
#   . scripts/testbed.sh
#   tb_up            # builds the bed, installs an EXIT/INT/TERM trap -> tb_down
#   tb_c CMD...      # run in the client ns      tb_s CMD...  # in the server ns
#   tb_bg_s CMD...   # start in the server ns in the background (killed by tb_down)
#   tb_down
# Exported after tb_up: TB_ID TB_C TB_S TB_NAME TB_ONE TB_ADDRS TB_FIRST
#   TB_FIRST4 TB_FIRST6 (first address getaddrinfo returns overall / per family,
#   as glibc sorts it per RFC 6724 in the client ns).
#
# Or as a command (for people):
#   scripts/testbed.sh up [ID]     build and leave it up (prints the ID)
#   scripts/testbed.sh status [ID] show it
#   scripts/testbed.sh down ID     remove it
#   scripts/testbed.sh gc          remove beds whose creating process is gone
#
# Needs root, iproute2, nftables, dnsmasq-base, getent.  Fails loudly (never
# skips) when the bed cannot be built.

TB_NAME=svc.resil.test
TB_ONE=one.resil.test
TB_STATE_DIR=/run/libresil-testbed

tb_die() {
    echo "testbed: FATAL: $*" >&2
    exit 1
}

tb_log() { [ -n "${TB_QUIET:-}" ] || echo "testbed: $*" >&2; }

tb_names() {
    TB_ID=${1:-${TB_ID:-$$}}
    TB_C=rsc-$TB_ID
    TB_S=rss-$TB_ID
    TB_STATE=$TB_STATE_DIR/$TB_ID.env
}

tb_c() { ip netns exec "$TB_C" "$@"; }
tb_s() { ip netns exec "$TB_S" "$@"; }

# Background helpers: print nothing, remember the pid; tb_down kills every
# process left in either namespace anyway.
tb_bg_c() { ip netns exec "$TB_C" "$@" & TB_LAST_PID=$!; }
tb_bg_s() { ip netns exec "$TB_S" "$@" & TB_LAST_PID=$!; }

tb_srv_addr4() { echo "10.231.$1.2"; }
tb_srv_addr6() { echo "fd00:231:$1::2"; }

# Uplink number of a server address.
tb_uplink_of() {
    case "$1" in
        10.231.1.*|fd00:231:1::*) echo 1 ;;
        10.231.2.*|fd00:231:2::*) echo 2 ;;
        *) echo 0 ;;
    esac
}

tb_check_tools() {
    local t
    [ "$(id -u)" -eq 0 ] || tb_die "must run as root (network namespaces)"
    for t in ip nft dnsmasq getent timeout; do
        command -v "$t" >/dev/null 2>&1 ||
            tb_die "missing tool '$t' (make deps-net installs it)"
    done
}

_tb_nft_rules() {
    # $1 = "s" (server: match destination) or "c" (client: match source)
    local k4 k6
    if [ "$1" = s ]; then k4="ip daddr"; k6="ip6 daddr"; else k4="ip saddr"; k6="ip6 saddr"; fi
    cat <<EOF
table inet resil {
    set bh4 { type ipv4_addr; }
    set bh6 { type ipv6_addr; }
    chain pre {
        type filter hook prerouting priority -300; policy accept;
        $k4 @bh4 drop
        $k6 @bh6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
        $k6 @bh6 drop
    }
}
EOF
}

tb_up() {
    tb_check_tools
    tb_names "${1:-}"
    if ip netns list | grep -qE "^($TB_C|$TB_S)( |$)"; then
        tb_die "namespaces for id $TB_ID already exist (scripts/testbed.sh down $TB_ID)"
    fi
    if [ -z "${TB_NO_TRAP:-}" ]; then
        trap 'tb_down' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    # gc removes beds whose owner died; a bed left up on purpose has none.
    TB_OWNER=$$
    [ -n "${TB_NO_TRAP:-}" ] && TB_OWNER=
    mkdir -p "$TB_STATE_DIR"
    echo "TB_OWNER=$TB_OWNER" >"$TB_STATE"

    ip netns add "$TB_C" || tb_die "ip netns add $TB_C"
    ip netns add "$TB_S" || tb_die "ip netns add $TB_S"
    local ns n
    for ns in "$TB_C" "$TB_S"; do
        ip -n "$ns" link set lo up || tb_die "lo up in $ns"
        # tb_link_down must not flush the IPv6 addresses (tb_heal brings the
        # link back with everything on it).
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1 ||
            tb_die "sysctl keep_addr_on_down in $ns"
    done
    for n in 1 2; do
        # Created inside the namespaces: no name ever exists in the root ns,
        # so parallel beds cannot collide.
        ip -n "$TB_C" link add "u$n" type veth peer name "u$n" netns "$TB_S" ||
            tb_die "veth u$n"
        ip -n "$TB_C" addr add "10.231.$n.1/24" dev "u$n" || tb_die addr
        ip -n "$TB_S" addr add "10.231.$n.2/24" dev "u$n" || tb_die addr
        ip -n "$TB_C" addr add "fd00:231:$n::1/64" dev "u$n" nodad || tb_die addr
        ip -n "$TB_S" addr add "fd00:231:$n::2/64" dev "u$n" nodad || tb_die addr
        ip -n "$TB_C" link set "u$n" up || tb_die "link up"
        ip -n "$TB_S" link set "u$n" up || tb_die "link up"
    done
    _tb_nft_rules s | ip netns exec "$TB_S" nft -f - || tb_die "nft in server ns"
    _tb_nft_rules c | ip netns exec "$TB_C" nft -f - || tb_die "nft in client ns"

    TB_ADDRS="10.231.1.2 fd00:231:1::2 10.231.2.2 fd00:231:2::2"

    # Name service for the client ns: ip netns exec bind-mounts
    # /etc/netns/NAME/* over /etc.
    local etc=/etc/netns/$TB_C
    mkdir -p "$etc" || tb_die "mkdir $etc"
    {
        echo "127.0.0.1 localhost"
        echo "::1 localhost ip6-localhost ip6-loopback"
        echo "fd00:231:1::2 $TB_NAME"
        echo "10.231.1.2 $TB_NAME"
        echo "fd00:231:2::2 $TB_NAME"
        echo "10.231.2.2 $TB_NAME"
    } >"$etc/hosts"
    echo "nameserver 127.0.0.1" >"$etc/resolv.conf"

    # DNS for c-ares: dnsmasq knows all four addresses of both names.
    local hr="" a
    for a in 1 2; do
        hr="$hr --host-record=$TB_NAME,10.231.$a.2,fd00:231:$a::2"
        hr="$hr --host-record=$TB_ONE,10.231.$a.2,fd00:231:$a::2"
    done
    # shellcheck disable=SC2086
    ip netns exec "$TB_C" dnsmasq --keep-in-foreground --conf-file=/dev/null \
        --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
        --port=53 --user=root --pid-file= --log-facility=/dev/null \
        $hr &
    TB_DNSMASQ_PID=$!

    # Wait for the links (nodad: IPv6 is usable at once) and for DNS.
    local i ok=0
    for i in $(seq 50); do
        if tb_c getent ahosts "$TB_NAME" >/dev/null 2>&1 &&
           tb_c /usr/bin/python3 - "$TB_ONE" >/dev/null 2>&1 <<'EOF'
import socket, struct, sys
# one A query to 127.0.0.1:53, expect at least 2 answers
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.sendto(q, ("127.0.0.1", 53))
r = s.recv(512)
sys.exit(0 if struct.unpack(">H", r[6:8])[0] >= 2 else 1)
EOF
        then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || tb_die "name service in $TB_C not ready (dnsmasq pid $TB_DNSMASQ_PID)"

    # Which address does getaddrinfo return first? (glibc: RFC 6724 order)
    TB_FIRST=$(tb_c getent ahosts "$TB_NAME" | awk '$2=="STREAM"{print $1; exit}')
    TB_FIRST4=$(tb_c getent ahostsv4 "$TB_NAME" | awk '$2=="STREAM"{print $1; exit}')
    TB_FIRST6=$(tb_c getent ahostsv6 "$TB_NAME" | awk '$2=="STREAM" && $1 !~ /^::ffff:/{print $1; exit}')
    [ -n "$TB_FIRST" ] && [ -n "$TB_FIRST4" ] && [ -n "$TB_FIRST6" ] ||
        tb_die "getaddrinfo for $TB_NAME in $TB_C returned nothing"
    echo "$TB_FIRST $TB_ONE" >>"$etc/hosts"

    export TB_ID TB_C TB_S TB_NAME TB_ONE TB_ADDRS TB_FIRST TB_FIRST4 TB_FIRST6
    {
        echo "TB_OWNER=$TB_OWNER"
        echo "TB_C=$TB_C"; echo "TB_S=$TB_S"
        echo "TB_FIRST=$TB_FIRST"; echo "TB_FIRST4=$TB_FIRST4"; echo "TB_FIRST6=$TB_FIRST6"
        echo "TB_ADDRS='$TB_ADDRS'"
    } >"$TB_STATE"
    tb_log "up: id $TB_ID, client ns $TB_C, server ns $TB_S, first address $TB_FIRST (v4 $TB_FIRST4, v6 $TB_FIRST6)"
}

# Kill every process in a namespace (started by us: the namespace is ours).
_tb_kill_ns() {
    local ns=$1 pids sig
    ip netns list 2>/dev/null | grep -qE "^$ns( |$)" || return 0
    for sig in TERM KILL; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -$sig $pids 2>/dev/null
        [ $sig = TERM ] && sleep 0.2
    done
}

tb_down() {
    [ -n "${TB_C:-}" ] || return 0
    _tb_kill_ns "$TB_C"
    _tb_kill_ns "$TB_S"
    ip netns del "$TB_C" 2>/dev/null
    ip netns del "$TB_S" 2>/dev/null
    rm -rf "/etc/netns/$TB_C" "/etc/netns/$TB_S"
    rm -f "$TB_STATE"
    tb_log "down: id $TB_ID"
}

_tb_nft_set() {
    # _tb_nft_set add|delete ADDR
    local op=$1 addr=$2 set=bh4
    case "$addr" in *:*) set=bh6 ;; esac
    ip netns exec "$TB_S" nft "$op" element inet resil "$set" "{ $addr }" &&
    ip netns exec "$TB_C" nft "$op" element inet resil "$set" "{ $addr }"
}

tb_blackhole_addr() {
    _tb_nft_set add "$1" || tb_die "blackhole $1"
    tb_log "blackholed $1"
}

tb_blackhole_uplink() {
    local n=$1
    tb_blackhole_addr "$(tb_srv_addr4 "$n")"
    tb_blackhole_addr "$(tb_srv_addr6 "$n")"
}

tb_link_down() {
    ip -n "$TB_S" link set "u$1" down || tb_die "link u$1 down"
    tb_log "uplink $1 down"
}

tb_heal() {
    local ns n
    for ns in "$TB_S" "$TB_C"; do
        ip netns exec "$ns" nft flush set inet resil bh4 || tb_die "heal"
        ip netns exec "$ns" nft flush set inet resil bh6 || tb_die "heal"
    done
    for n in 1 2; do
        ip -n "$TB_S" link set "u$n" up || tb_die "link u$n up"
    done
    # nodad addresses are usable at once; give the carrier a moment.
    local i
    for i in $(seq 20); do
        ip -n "$TB_C" link show u1 | grep -q LOWER_UP &&
        ip -n "$TB_C" link show u2 | grep -q LOWER_UP && break
        sleep 0.05
    done
    tb_log "healed"
}

tb_status() {
    echo "id $TB_ID: client ns $TB_C, server ns $TB_S"
    echo "first address: $TB_FIRST (v4 $TB_FIRST4, v6 $TB_FIRST6)"
    echo "--- client addresses"; ip -n "$TB_C" -br addr
    echo "--- server addresses"; ip -n "$TB_S" -br addr
    echo "--- blackholed (server ns)"
    ip netns exec "$TB_S" nft list set inet resil bh4 | grep elements || true
    ip netns exec "$TB_S" nft list set inet resil bh6 | grep elements || true
    echo "--- getent ahosts $TB_NAME (client ns)"; tb_c getent ahosts "$TB_NAME"
    echo "--- hosts file"; cat "/etc/netns/$TB_C/hosts"
    echo "--- processes"; ip netns pids "$TB_C"; ip netns pids "$TB_S"
}

_tb_load() {
    tb_names "$1"
    [ -f "$TB_STATE" ] || tb_die "no test bed with id $TB_ID ($TB_STATE missing)"
    # shellcheck disable=SC1090
    . "$TB_STATE"
    export TB_ID TB_C TB_S TB_FIRST TB_FIRST4 TB_FIRST6 TB_ADDRS
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cmd=${1:-}
    case "$cmd" in
        up)
            TB_NO_TRAP=1 tb_up "${2:-$$}"
            echo "$TB_ID"
            echo "run in it: ip netns exec $TB_C CMD   (server: ip netns exec $TB_S CMD)" >&2
            echo "remove:    $0 down $TB_ID" >&2
            ;;
        down)
            [ -n "${2:-}" ] || tb_die "usage: $0 down ID"
            tb_names "$2"
            tb_down
            ;;
        status)
            if [ -z "${2:-}" ]; then
                ls "$TB_STATE_DIR" 2>/dev/null | sed 's/\.env$//'
            else
                _tb_load "$2"; tb_status
            fi
            ;;
        blackhole-addr|blackhole-uplink|link-down|heal)
            _tb_load "${2:?id}"
            case $cmd in
                blackhole-addr) tb_blackhole_addr "${3:?addr}" ;;
                blackhole-uplink) tb_blackhole_uplink "${3:?n}" ;;
                link-down) tb_link_down "${3:?n}" ;;
                heal) tb_heal ;;
            esac
            ;;
        gc)
            for f in "$TB_STATE_DIR"/*.env; do
                [ -f "$f" ] || continue
                owner=$(sed -n 's/^TB_OWNER=//p' "$f")
                if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
                    id=$(basename "$f" .env)
                    ( tb_names "$id"; tb_down )
                fi
            done
            ;;
        *)
            echo "usage: $0 up [ID] | down ID | status [ID] | blackhole-addr ID ADDR |" >&2
            echo "       blackhole-uplink ID N | link-down ID N | heal ID | gc" >&2
            exit 2
            ;;
    esac
fi
