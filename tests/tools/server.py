# tests/tools: threaded HTTP server on 127.0.0.1, port 0; writes the port
# to argv[1] once listening. Ends when its parent (the test) goes away.
import http.server
import os
import sys
import threading
import time


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class S(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


srv = S(("127.0.0.1", 0), H)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
ppid = os.getppid()


def watchdog():
    while os.getppid() == ppid:
        time.sleep(0.5)
    os._exit(0)


threading.Thread(target=watchdog, daemon=True).start()
srv.serve_forever()
