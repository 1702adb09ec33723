#!/usr/bin/python3
"""A verified byte stream for the session scenarios (tests/net/session.sh).

The stream is a run of 64-bit little-endian counters, so that a lost,
duplicated or reordered byte is caught at the byte where it happens.

  stream.py serve PORT [SHAPE [N]]
      listen on PORT; per connection read a request line "send N" /
      "recv N" / "both N" / "halfclose N" / "hold N" (N bytes, not MiB,
      at once, then nothing more until EOF) and act. SHAPE is the server's shape:
        threads  (default) a thread per connection, accept loop of our own
        thread   socketserver.ThreadingTCPServer
        fork     socketserver.ForkingTCPServer (the parent accepts, a child
                 serves)
        prefork  N worker processes forked before any accept, each
                 calling accept() on the one listener
      Every connection the program accepted prints "accept PID PEER" in
      the process that serves it.
  stream.py probe HOST PORT redis|http|banner N
      N fresh connections, each: a request (PING; GET / HTTP/1.0; none
      for a banner server), its answer read to EOF (redis: one line;
      HTTP: its Date header left out of the comparison);
      prints the least, median and 90th percentile time from the request
      (the connect, for a banner) to the first byte, the answers' sha256
      prefixes (one when every answer was the same) and the data segments
      in/out of the connections (TCP_INFO)
  stream.py pace FILE
      copy FILE to stdout, a MiB per PACE_MS (a paced reader for a pipe)
  stream.py client HOST PORT DIR N [nb]
      DIR send|recv|both: N MiB each way; halfclose: N MiB to the server
      at once (no pacing), then shutdown(SHUT_WR) ("shutdown T" printed),
      while the server reads a MiB per PACE_MS and expects EOF after
      them (not with nb). "nb": a non-blocking socket
      driven by an epoll loop (selectors), connect included; otherwise
      blocking calls ("both": the receiving thread blocks in recv() while
      a second thread sends).

Both ends print "progress TAG K T" lines (K: MiB received and verified,
T: unix time in ms; TAG "client", or "server:PEERPORT" for the
connection from that port) and, at the end, "ok ..." or "FAIL <why>" (exit
status 1). A sender paces itself (a sleep per MiB, PACE_MS) so that a
failure can be injected in the middle.
"""
import hashlib
import os
import selectors
import socket
import socketserver
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


def now_ms():
    return int(time.time() * 1000)


class Verifier:
    """Checks received bytes against the stream, MiB by MiB."""

    def __init__(self, n, tag):
        self.want = n * MIB
        self.got = 0
        self.buf = b""
        self.blk = 0
        self.tag = tag
        self.err = None

    def done(self):
        return self.got >= self.want

    def feed(self, d):
        if not d:
            self.err = "FAIL %s: EOF after %d of %d bytes" % (
                self.tag, self.got, self.want)
            return self.err
        self.buf += d
        self.got += len(d)
        if self.got > self.want:
            self.err = "FAIL %s: %d bytes more than the stream" % (
                self.tag, self.got - self.want)
            return self.err
        while len(self.buf) >= MIB:
            exp = block(self.blk)
            if self.buf[:MIB] != exp:
                k = next(j for j in range(MIB) if self.buf[j] != exp[j])
                self.err = "FAIL %s: byte %d differs (MiB %d)" % (
                    self.tag, self.blk * MIB + k, self.blk)
                return self.err
            self.buf = self.buf[MIB:]
            self.blk += 1
            print("progress %s %d %d" % (self.tag, self.blk, now_ms()),
                  flush=True)
        return None


def send(s, n):
    for i in range(n):
        s.sendall(block(i))
        time.sleep(PACE)


def recv(s, n, tag, pace=0.0):
    v = Verifier(n, tag)
    while not v.done():
        if v.feed(s.recv(MIB if pace else 1 << 20)):
            return v.err
        time.sleep(pace)
    return None


def serve_conn(c):
    try:
        tag = "server:%d" % c.getpeername()[1]
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
            err = recv(c, n, tag)
        if what == "hold":  # N bytes (at most a MiB) at once, then
            # nothing more: read what comes until EOF
            c.sendall(block(0)[:n])
            while c.recv(65536):
                pass
        if what == "halfclose":  # the client sends at once: read slowly
            err = recv(c, n, tag, PACE)
            if c.recv(1) != b"":
                err = err or "FAIL %s: no EOF after the stream" % tag
        if what in ("recv", "both"):
            t.join()
            # the client closes when it has everything
            if c.recv(1) != b"":
                err = err or "FAIL %s: bytes after the stream" % tag
        print(err or "ok %s %s %d" % (tag, what, n), flush=True)
    except OSError as e:
        print("FAIL server: %s" % e, flush=True)
    finally:
        c.close()


def announce(peer):
    print("accept %d %s:%d" % (os.getpid(), peer[0], peer[1]), flush=True)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        announce(self.client_address)
        serve_conn(self.request)


class Threading(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Forking(socketserver.ForkingTCPServer):
    allow_reuse_address = True


def listener(port):
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(64)
    return ls


def serve(port, shape="threads", workers=3):
    if shape in ("thread", "fork"):
        cls = Threading if shape == "thread" else Forking
        cls(("0.0.0.0", port), Handler).serve_forever()
        return
    ls = listener(port)
    if shape == "prefork":
        for _ in range(workers):
            if os.fork() == 0:
                while True:
                    c, peer = ls.accept()
                    announce(peer)
                    serve_conn(c)
        ls.close()
        while True:
            os.wait()
    while True:
        c, peer = ls.accept()
        announce(peer)
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


def hello(s):
    print("peer %s" % s.getpeername()[0], flush=True)
    print("local %d" % s.getsockname()[1], flush=True)


def client(host, port, what, n):
    s = socket.create_connection((host, port))
    hello(s)
    s.sendall(("%s %d\n" % (what, n)).encode())
    err = None
    t = None
    if what == "halfclose":
        for i in range(n):
            s.sendall(block(i))
        s.shutdown(socket.SHUT_WR)
        print("shutdown %d" % now_ms(), flush=True)
        if s.recv(1) != b"":  # the server closes when it has everything
            err = "FAIL client: bytes from the server"
    if what in ("send", "both"):
        t = threading.Thread(target=send, args=(s, n))
        t.start()
    if what in ("recv", "both"):
        err = recv(s, n, "client")
    if t:
        t.join()
    if what == "send":
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":  # the server closes when it has everything
            err = "FAIL client: bytes from the server"
    s.close()
    print(err or "ok client %s %d" % (what, n), flush=True)
    return 1 if err else 0


def client_nb(host, port, what, n):
    """The same client as an event loop: a non-blocking socket, epoll."""
    ai = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    assert type(sel).__name__ == "EpollSelector"
    rc = s.connect_ex(ai[4])
    if rc not in (0, 115):  # EINPROGRESS
        return "FAIL client: connect: %s" % os.strerror(rc)
    sel.register(s, selectors.EVENT_WRITE)
    sel.select()
    rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if rc:
        return "FAIL client: connect: %s" % os.strerror(rc)
    hello(s)
    out = ("%s %d\n" % (what, n)).encode()
    sending = what in ("send", "both")
    v = Verifier(n if what in ("recv", "both") else 0, "client")
    nblk = 0          # blocks queued for sending
    next_t = 0.0      # when the next block may be queued
    shut = False
    eof = False
    while True:
        if sending and not out and nblk < n and time.time() >= next_t:
            out = block(nblk)
            nblk += 1
            next_t = time.time() + PACE
        all_sent = not out and (not sending or nblk == n)
        if what == "send" and all_sent and not shut:
            s.shutdown(socket.SHUT_WR)
            shut = True
        if all_sent and v.done() and (what != "send" or eof):
            break
        ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        sel.modify(s, ev)
        wait = None
        if sending and not out and nblk < n:
            wait = max(0.0, next_t - time.time())
        for _, mask in sel.select(wait):
            if mask & selectors.EVENT_READ:
                try:
                    d = s.recv(1 << 20)
                except BlockingIOError:
                    d = None
                if d is not None:
                    if what == "send":
                        if d:
                            return "FAIL client: bytes from the server"
                        eof = True
                        if not shut:
                            return "FAIL client: EOF before the end"
                    elif v.feed(d):
                        return v.err
            if mask & selectors.EVENT_WRITE and out:
                try:
                    k = s.send(out)
                    out = out[k:]
                except BlockingIOError:
                    pass
    s.close()
    return None


REQ = {"redis": b"PING\r\n", "http": b"GET / HTTP/1.0\r\n\r\n",
       "banner": b""}


def probe(host, port, kind, n):
    """n fresh connections: the time from the request (from the connect
    for a banner) to the first byte of the answer, the answer's bytes (to
    EOF; a redis reply is one line), the data segments each way."""
    times, digests, segs = [], set(), set()
    for _ in range(n):
        s = socket.create_connection((host, port), 5)
        t0 = time.perf_counter()
        if REQ[kind]:
            s.sendall(REQ[kind])
        got = s.recv(65536)
        t1 = time.perf_counter()
        while got and not (kind == "redis" and got.endswith(b"\r\n")):
            d = s.recv(65536)
            if not d:
                break
            got += d
        ti = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        # struct tcp_info: tcpi_data_segs_in, tcpi_data_segs_out
        segs.add(struct.unpack_from("<II", ti, 152))
        s.close()
        times.append((t1 - t0) * 1000.0)
        if kind == "http":  # the one header that changes every second
            got = b"".join(x for x in got.split(b"\r\n")
                           if not x.startswith(b"Date: "))
        digests.add(hashlib.sha256(got).hexdigest()[:16])
    times.sort()
    print("probe %s n=%d min_ms=%.3f median_ms=%.3f p90_ms=%.3f bytes=%s "
          "segs_in_out=%s"
          % (kind, n, times[0], times[n // 2], times[n * 9 // 10],
             ",".join(sorted(digests)),
             ",".join("%d/%d" % x for x in sorted(segs))), flush=True)


def pace(path):
    with open(path, "rb") as f:
        while True:
            d = f.read(MIB)
            if not d:
                break
            sys.stdout.buffer.write(d)
            sys.stdout.buffer.flush()
            time.sleep(PACE)


if __name__ == "__main__":
    try:
        if sys.argv[1] == "pace":
            pace(sys.argv[2])
        elif sys.argv[1] == "probe":
            probe(sys.argv[2], int(sys.argv[3]), sys.argv[4],
                  int(sys.argv[5]))
        elif sys.argv[1] == "serve":
            serve(int(sys.argv[2]), *(sys.argv[3:4]),
                  *[int(a) for a in sys.argv[4:5]])
        elif sys.argv[1] == "client":
            args = (sys.argv[2], int(sys.argv[3]), sys.argv[4],
                    int(sys.argv[5]))
            if sys.argv[6:7] == ["nb"]:
                err = client_nb(*args)
                print(err or "ok client %s %s" % args[2:], flush=True)
                sys.exit(1 if err else 0)
            sys.exit(client(*args))
    except OSError as e:
        print("FAIL %s" % e, flush=True)
        sys.exit(1)
