#!/usr/bin/python3
"""Test clients for tests/net (run in the client namespace, an ordinary
program: libresil, if any, comes only from LD_PRELOAD).

  client.py busy NAME PORT        request/response loop (1000 bytes each)
  client.py idle NAME PORT        one exchange, then wait in recv()
  client.py sink NAME PORT BYTES  send BYTES, half-close, expect the server's
                                  "<bytes> <sha256>" to match what was sent
  client.py banner NAME PORT      send nothing, wait in recv() for the
                                  server's "banner ADDR" line
  client.py reconnect NAME PORT   one exchange, wait in recv() until an
                                  error, then connect to NAME again and say
                                  how long that took

  --poke=ADDR,PORT (last argument, any mode): a side thread opens and closes
  a connection to ADDR:PORT every 0.5 s (a program with other connections).

Every line printed is "<what> ... <unix time>", flushed at once:
  peer IP T | sent N T (sink) | error ERRNAME T | eof T | ok N T | mismatch ...
  | banner ADDR T | reconnect IP MS T
"""
import errno
import hashlib
import socket
import sys
import threading
import time


def say(*a):
    print(*a, "%.3f" % time.time(), flush=True)


def errname(e):
    if e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    if isinstance(e, socket.timeout):
        return "timeout"
    return type(e).__name__


def recv_exact(s, n):
    got = 0
    while got < n:
        d = s.recv(n - got)
        if not d:
            return False
        got += len(d)
    return True


def poke(addr, port):
    while True:
        time.sleep(0.5)
        try:
            socket.create_connection((addr, port), 2).close()
        except OSError:
            pass


def main():
    if sys.argv[-1].startswith("--poke="):
        a, p = sys.argv.pop()[len("--poke="):].split(",")
        threading.Thread(target=poke, args=(a, int(p)), daemon=True).start()
    mode, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.create_connection((name, port))
    say("peer", s.getpeername()[0])
    try:
        if mode == "busy":
            req = b"r" * 1000
            while True:
                s.sendall(req)
                if not recv_exact(s, len(req)):
                    say("eof")
                    return 4
                time.sleep(0.02)
        elif mode == "idle":
            s.sendall(b"hello")
            if not recv_exact(s, 5):
                say("eof")
                return 4
            say("idle")
            d = s.recv(1)
            say("eof" if not d else "data")
            return 4
        elif mode == "reconnect":
            s.sendall(b"hello")
            if not recv_exact(s, 5):
                say("eof")
                return 4
            say("idle")
            try:
                d = s.recv(1)
                say("eof" if not d else "data")
                return 4
            except OSError as e:
                say("error", errname(e))
            s.close()
            t0 = time.monotonic()
            s = socket.create_connection((name, port))
            ms = (time.monotonic() - t0) * 1000
            say("reconnect", s.getpeername()[0], "%.0f" % ms)
            return 0
        elif mode == "banner":
            line = b""
            while not line.endswith(b"\n"):
                d = s.recv(256)
                if not d:
                    say("eof")
                    return 4
                line += d
            say(line.decode().strip())
            return 0
        elif mode == "sink":
            total = int(sys.argv[4])
            h = hashlib.sha256()
            sent = 0
            i = 0
            while sent < total:
                # deterministic, position-dependent content
                chunk = (i.to_bytes(8, "big") * 8192)[: min(65536, total - sent)]
                s.sendall(chunk)
                h.update(chunk)
                sent += len(chunk)
                i += 1
                say("sent", sent)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while not reply.endswith(b"\n"):
                d = s.recv(256)
                if not d:
                    break
                reply += d
            want = "%d %s" % (sent, h.hexdigest())
            if reply.decode().strip() == want:
                say("ok", sent)
                return 0
            say("mismatch", "sent=%r" % want, "got=%r" % reply.decode().strip())
            return 5
    except OSError as e:
        say("error", errname(e))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
