#!/usr/bin/python3
"""An attacker of a process's resume listener (tests/net/session.sh,
doc/session.md "Resume decision").

  resume_attack.py badmac HOST PORT ID ROLE   a RESUME for session ID (hex)
                                              claiming ROLE (0 client,
                                              1 server), fresh counter,
                                              MAC of random bytes
  resume_attack.py unknown HOST PORT          a RESUME for a random id
  resume_attack.py replay HOST PORT HEX       send HEX (a recorded RESUME)
  resume_attack.py garbage HOST PORT          random bytes; then a header
                                              that announces a RESUME and
                                              a body of random bytes
  resume_attack.py flood HOST PORT N SECS [hello]
                                              N connections at once, half
                                              of them sending random bytes,
                                              half silent (hello: each a
                                              HELLO with a wrong MAC), held
                                              SECS seconds at most for
                                              each one's first answer
  resume_attack.py hold HOST PORT N SECS      N silent connections kept
                                              open for SECS seconds, each
                                              one the peer closes opened
                                              again at once
  resume_attack.py hellos HOST PORT N         N connections to a session
                                              port of the program, each
                                              with a HELLO whose MAC is
                                              wrong

Each prints one line per connection or summary:
  answer REFUSE <reason>   | answer closed | answer bytes <hex> | answer none
  (nothing within the wait, connection still open); flood: "flood N
  connected, R refused, A answered otherwise, C closed by the peer, O
  still open";
  hellos: "hellos N refused R of N"; hold: "hold N reopened R".
"""
import os
import select
import socket
import struct
import sys
import time

MAGIC = b"\x00RSL"
REFUSE = 5


def header(typ, length):
    return MAGIC + bytes([typ, 1]) + struct.pack(">H", length)


def resume(sid, role, counter):
    body = sid + bytes([role, 0]) + struct.pack(">QQQ", counter, 0, 0)
    body += os.urandom(16) + os.urandom(16)  # tail, nonce
    return header(3, 98) + body + os.urandom(16)  # a MAC nobody made


def answer(s, wait=4.0):
    s.settimeout(wait)
    got = b""
    try:
        while True:
            d = s.recv(512)
            if not d:
                break
            got += d
    except socket.timeout:
        if not got:
            return "answer none"
    except ConnectionResetError:
        pass
    if not got:
        return "answer closed"
    if len(got) == 9 and got[:4] == MAGIC and got[4] == REFUSE:
        return "answer REFUSE %d" % got[8]
    return "answer bytes %s" % got.hex()


def one(host, port, payload):
    s = socket.create_connection((host, port), 2)
    s.sendall(payload)
    r = answer(s)
    s.close()
    return r


def rand(n):
    """n random bytes, none of them a newline: a line-reading server
    without libresil treats every HELLO the same (waits for the line)."""
    return bytes(b if b != 10 else 11 for b in os.urandom(n))


def bad_hello():
    # flags 0, key, nonce, rcvbuf, resume port 0, no address, bad MAC
    body = struct.pack(">H", 0) + rand(32) + rand(16)
    body += struct.pack(">IHB", 1 << 20, 0, 0)
    return header(1, 8 + len(body) + 16) + body + rand(16)


def flood(host, port, n, secs, what):
    """n connections at once; what "random": half of them send 64 random
    bytes, half stay silent; "hello": each sends a HELLO with a bad MAC.
    Then each one's first answer is read, waiting secs seconds at most."""
    socks = []
    p = select.poll()
    for i in range(n):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
        p.register(s, select.POLLOUT)
    # a listener's backlog drops SYNs past it: those connect on a retry
    pending, end = set(s.fileno() for s in socks), time.time() + 10
    while pending and time.time() < end:
        for fd, _ in p.poll(100):
            pending.discard(fd)
            p.unregister(fd)
    connected = 0
    for i, s in enumerate(socks):
        try:
            if what == "hello":
                s.send(bad_hello())
            elif i % 2 == 0:
                s.send(os.urandom(64))
            connected += 1
        except OSError:
            pass
    # every connection's first answer (bytes, EOF or an error), within
    # secs seconds
    answered = refused = closed = 0
    p = select.poll()
    left = {}
    for s in socks:
        p.register(s, select.POLLIN)
        left[s.fileno()] = s
    end = time.time() + secs
    while left and time.time() < end:
        for fd, _ in p.poll(100):
            s = left.pop(fd)
            p.unregister(fd)
            try:
                d = s.recv(512)
                if len(d) == 9 and d[:4] == MAGIC and d[4] == REFUSE:
                    refused += 1
                elif d:
                    answered += 1
                else:
                    closed += 1
            except OSError:
                closed += 1
    still = len(left)
    for s in socks:
        s.close()
    return "flood %d connected, %d refused, %d answered otherwise, %d " \
           "closed by the peer, %d still open" % (
               connected, refused, answered, closed, still)


def hold(host, port, n, secs):
    """The cheapest denial of resumes: connections that say nothing, kept
    at the listener for as long as the attacker likes."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    p = select.poll()
    socks = {}
    reopened = 0

    def open_one():
        s = socket.socket(fam)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks[s.fileno()] = s
        p.register(s, select.POLLIN)

    for _ in range(n):
        open_one()
    end = time.time() + secs
    while time.time() < end:
        for fd, _ in p.poll(50):
            s = socks.pop(fd)
            p.unregister(fd)
            s.close()
            open_one()
            reopened += 1
    for s in socks.values():
        s.close()
    return "hold %d reopened %d" % (n, reopened)


def hellos(host, port, n):
    refused = 0
    for _ in range(n):
        s = socket.create_connection((host, port), 2)
        s.sendall(bad_hello())
        s.settimeout(2)
        try:
            d = s.recv(9)
            if d[:4] == MAGIC and len(d) == 9 and d[4] == REFUSE and \
                    d[8] == 2:
                refused += 1
        except OSError:
            pass
        s.close()
    return "hellos %d refused %d of %d" % (n, refused, n)


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "badmac":
        print(one(host, port, resume(bytes.fromhex(sys.argv[4]),
                                     int(sys.argv[5]), 1 << 40)))
    elif mode == "unknown":
        print(one(host, port, resume(os.urandom(16), 0, 1)))
    elif mode == "replay":
        print(one(host, port, bytes.fromhex(sys.argv[4])))
    elif mode == "garbage":
        print(one(host, port, os.urandom(300)))
        print(one(host, port, header(3, 98) + os.urandom(90)))
    elif mode == "flood":
        print(flood(host, port, int(sys.argv[4]), float(sys.argv[5]),
                    sys.argv[6] if len(sys.argv) > 6 else "random"))
    elif mode == "hold":
        print(hold(host, port, int(sys.argv[4]), float(sys.argv[5])))
    elif mode == "hellos":
        print(hellos(host, port, int(sys.argv[4])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
