#!/usr/bin/env python3
"""Benchmark client: RETR + DELE of every message over implicit TLS, then QUIT.

  pop3_drain.py HOST PORT CAFILE USER PASSWORD

Prints "<messages> <bytes> <seconds>" where seconds covers the session from
connect to QUIT's answer (interpreter start-up excluded), the same client
for every server it is pointed at.
"""

import poplib
import ssl
import sys
import time

poplib._MAXLINE = 1 << 20


def main(argv):
    host, port, cafile, user, password = argv[1:6]
    context = ssl.create_default_context(cafile=cafile)
    started = time.monotonic()
    client = poplib.POP3_SSL(host, int(port), context=context, timeout=120)
    client.user(user)
    client.pass_(password)
    count, _ = client.stat()
    total = 0
    for n in range(1, count + 1):
        _, lines, octets = client.retr(n)
        total += sum(len(line) + 2 for line in lines)
        client.dele(n)
    client.quit()
    print(count, total, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
