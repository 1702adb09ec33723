#!/usr/bin/python3
"""A verified byte stream for the session scenarios (tests/net/session.sh).

The stream is a run of 64-bit little-endian counters, so that a lost,
duplicated or reordered byte is caught at the byte where it happens.

  stream.py serve PORT            listen on [::]:PORT (v4 too); per
                                  connection read a request line
                                  "send N" / "recv N" / "both N" and act
  stream.py client HOST PORT DIR N   DIR send|recv|both: N MiB each way

Both ends print "progress K" lines (MiB done, the receiving side's count)
and, at the end, "ok BYTES" or "FAIL <why>" (exit status 1). A transfer
paces itself (a sleep per MiB, PACE_MS) so that a failure can be injected
in the middle.
"""
import os
import socket
import struct
import sys
import threading
import time

MIB = 1 << 20
PACE = float(os.environ.get("PACE_MS", "20")) / 1000.0


def block(i):
    """MiB number i of the stream."""
    base = i * (MIB // 8)
    return struct.pack("<%dQ" % (MIB // 8), *range(base, base + MIB // 8))


def send(s, n):
    for i in range(n):
        s.sendall(block(i))
        time.sleep(PACE)


def recv(s, n, tag):
    want = n * MIB
    got = 0
    buf = b""
    blk = 0
    while got < want:
        d = s.recv(1 << 20)
        if not d:
            return "FAIL %s: EOF after %d of %d bytes" % (tag, got, want)
        buf += d
        got += len(d)
        while len(buf) >= MIB:
            if buf[:MIB] != block(blk):
                # where exactly
                exp = block(blk)
                k = next(j for j in range(MIB) if buf[j] != exp[j])
                return "FAIL %s: byte %d differs (MiB %d)" % (
                    tag, blk * MIB + k, blk)
            buf = buf[MIB:]
            blk += 1
            print("progress %s %d" % (tag, blk), flush=True)
    return None


def serve_conn(c):
    try:
        f = b""
        while not f.endswith(b"\n"):
            d = c.recv(1)
            if not d:
                return
            f += d
        what, n = f.decode().split()
        n = int(n)
        err = None
        if what in ("recv", "both"):   # the client receives: we send
            t = threading.Thread(target=send, args=(c, n))
            t.start()
        if what in ("send", "both"):
            err = recv(c, n, "server")
        if what in ("recv", "both"):
            t.join()
            # the client closes when it has everything
            if c.recv(1) != b"":
                err = err or "FAIL server: bytes after the stream"
        print(err or "ok server %s %d" % (what, n), flush=True)
    except OSError as e:
        print("FAIL server: %s" % e, flush=True)
    finally:
        c.close()


def serve(port):
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


def client(host, port, what, n):
    s = socket.create_connection((host, port))
    print("peer %s" % s.getpeername()[0], flush=True)
    s.sendall(("%s %d\n" % (what, n)).encode())
    err = None
    t = None
    if what in ("send", "both"):
        t = threading.Thread(target=send, args=(s, n))
        t.start()
    if what in ("recv", "both"):
        err = recv(s, n, "client")
    if t:
        t.join()
    if what == "send":
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the server closes when it has everything
    s.close()
    print(err or "ok client %s %d" % (what, n), flush=True)
    return 1 if err else 0


if __name__ == "__main__":
    try:
        if sys.argv[1] == "serve":
            serve(int(sys.argv[2]))
        elif sys.argv[1] == "client":
            sys.exit(client(sys.argv[2], int(sys.argv[3]), sys.argv[4],
                            int(sys.argv[5])))
    except OSError as e:
        print("FAIL %s" % e, flush=True)
        sys.exit(1)
