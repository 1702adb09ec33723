#!/usr/bin/python3
"""Test servers for tests/net (run in the server namespace).

  servers.py echo PORT          echo every byte back (request/response loops)
  servers.py sink PORT GOFILE   accept, read nothing until GOFILE exists, then
                                read to EOF and answer "<bytes> <sha256>\\n"
  servers.py banner PORT GOFILE accept, say nothing until GOFILE exists, then
                                send "banner <server address>\\n" (a server
                                that speaks first, like SMTP or SSH)
Listens on [::] with IPV6_V6ONLY off, so every server address (v4 and v6 of
both uplinks) reaches it.
"""
import hashlib
import os
import socket
import sys
import threading
import time


def echo(c):
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()


def sink(c, gofile):
    try:
        while not os.path.exists(gofile):
            time.sleep(0.05)
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            n += len(d)
            h.update(d)
        c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
    except OSError:
        pass
    finally:
        c.close()


def banner(c, gofile):
    try:
        while not os.path.exists(gofile):
            time.sleep(0.05)
        c.sendall(("banner %s\n" % c.getsockname()[0]).encode())
        time.sleep(30)
    except OSError:
        pass
    finally:
        c.close()


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        if mode == "echo":
            t = threading.Thread(target=echo, args=(c,), daemon=True)
        else:
            fn = sink if mode == "sink" else banner
            t = threading.Thread(target=fn, args=(c, sys.argv[3]), daemon=True)
        t.start()


if __name__ == "__main__":
    main()
