#!/usr/bin/env python3
"""Retrieves every message with Python's poplib, as an archiver would.

  pop3_fetch.py MODE HOST PORT CAFILE USER PASSWORD_FILE OUT_DIR [delete]

MODE is stls (STLS on the plain port) or ssl (implicit TLS). Each message is
written to OUT_DIR/<n>.eml with CRLF line endings, exactly as received.
"""

import os
import poplib
import ssl
import sys

# poplib refuses lines over 2048 octets, but real mail has longer ones
# (see tests/fixtures/long-lines.eml); an archiver must accept them.
poplib._MAXLINE = 1 << 20


def main(argv):
    mode, host, port, cafile, user, password_file, out_dir = argv[1:8]
    delete = len(argv) > 8 and argv[8] == "delete"
    with open(password_file) as f:
        password = f.readline().rstrip("\r\n")
    context = ssl.create_default_context(cafile=cafile)
    if mode == "ssl":
        client = poplib.POP3_SSL(host, int(port), context=context, timeout=60)
    else:
        client = poplib.POP3(host, int(port), timeout=60)
        client.stls(context=context)
    client.user(user)
    client.pass_(password)
    count, _ = client.stat()
    os.makedirs(out_dir, exist_ok=True)
    for n in range(1, count + 1):
        _, lines, _ = client.retr(n)
        with open(os.path.join(out_dir, "%d.eml" % n), "wb") as f:
            f.write(b"".join(line + b"\r\n" for line in lines))
        if delete:
            client.dele(n)
    client.quit()
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
