#!/usr/bin/env python3
"""A time-stamping authority for the tests: RFC 3161 over HTTP, each reply
made by `openssl ts -reply` with a TSA certificate the test made.

  tsa_server.py PORT_FILE DIR MODE

DIR holds tsa.cnf, tsa.key and tsa.pem. MODE: ok (a real reply), garbage
(a 200 with bytes that are not DER), huge (a 4 MiB body), trickle (one
byte a second), wrongcert (signed by DIR/other.key and other.pem, a
certificate the gateway does not trust). It binds 127.0.0.1 on a free port,
writes the port to PORT_FILE, and serves until killed. Every openssl run
has a timeout.
"""

import http.server
import os
import subprocess
import sys
import tempfile
import time


class Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"
    directory = "."

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.mode == "garbage":
            return self.reply(b"this is not a time-stamp response")
        if self.mode == "huge":
            return self.reply(b"\x30" * (4 << 20))
        if self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(60):
                try:
                    self.wfile.write(b"\x30")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(1)
            return
        signer = "other" if self.mode == "wrongcert" else "tsa"
        d = self.directory
        with tempfile.TemporaryDirectory() as tmp:
            query = os.path.join(tmp, "q.tsq")
            out = os.path.join(tmp, "r.tsr")
            with open(query, "wb") as f:
                f.write(body)
            run = subprocess.run(
                ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"),
                 "-queryfile", query, "-inkey", os.path.join(d, signer + ".key"),
                 "-signer", os.path.join(d, signer + ".pem"), "-out", out],
                capture_output=True, timeout=30, cwd=d, check=False)
            if run.returncode != 0:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(run.stderr)
                return
            with open(out, "rb") as f:
                self.reply(f.read())

    def reply(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv):
    port_file, directory, mode = argv[1:4]
    Handler.mode = mode
    Handler.directory = directory
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
