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
  resume_attack.py flood HOST PORT N SECS     N connections at once, half
                                              of them sending random bytes,
                                              half silent, held SECS seconds
  resume_attack.py hellos HOST PORT N         N connections to a session
                                              port of the program, each
                                              with a HELLO whose MAC is
                                              wrong

Each prints one line per connection or summary:
  answer REFUSE <reason>   | answer closed | answer bytes <hex> | answer none
  (nothing within the wait, connection still open); flood: "flood N
  connected, A answered, C closed by the peer, O still open";
  hellos: "hellos N refused R of N".
"""
import os
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


def flood(host, port, n, secs):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
    time.sleep(0.5)
    connected = 0
    for i, s in enumerate(socks):
        try:
            if i % 2 == 0:
                s.send(os.urandom(64))
            connected += 1
        except (BlockingIOError, OSError):
            pass
    time.sleep(secs)
    answered = closed = still = 0
    for s in socks:
        try:
            d = s.recv(512)
            if d:
                answered += 1
            else:
                closed += 1
        except BlockingIOError:
            still += 1
        except OSError:
            closed += 1
        s.close()
    return "flood %d connected, %d answered, %d closed by the peer, " \
           "%d still open" % (connected, answered, closed, still)


def hellos(host, port, n):
    refused = 0
    for _ in range(n):
        # flags 0, key, nonce, rcvbuf, resume port 0, no address, bad MAC
        body = struct.pack(">H", 0) + os.urandom(32) + os.urandom(16)
        body += struct.pack(">IHB", 1 << 20, 0, 0)
        msg = header(1, 8 + len(body) + 16) + body + os.urandom(16)
        s = socket.create_connection((host, port), 2)
        s.sendall(msg)
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
        print(flood(host, port, int(sys.argv[4]), float(sys.argv[5])))
    elif mode == "hellos":
        print(hellos(host, port, int(sys.argv[4])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
