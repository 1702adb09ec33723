# tests/tools: many connects from threads and forked children, each to
# 127.0.0.2 (nothing listens there) so that libresil races it against
# 127.0.0.1 and writes one "connect" event. Prints the number of connects.
import os
import socket
import sys
import threading

port = int(sys.argv[1])
THREADS, PER_THREAD, CHILDREN = 4, 25, 3


def work(n):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.2", port), timeout=10)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
        s.close()


def run_threads():
    ts = [threading.Thread(target=work, args=(PER_THREAD,))
          for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


kids = []
for _ in range(CHILDREN):
    pid = os.fork()
    if pid == 0:
        try:
            run_threads()
        except Exception as e:
            print("child:", e, file=sys.stderr)
            os._exit(1)
        os._exit(0)
    kids.append(pid)
run_threads()
bad = 0
for pid in kids:
    _, st = os.waitpid(pid, 0)
    bad += st != 0
print(THREADS * PER_THREAD * (CHILDREN + 1))
sys.exit(1 if bad else 0)
