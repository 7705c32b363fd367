#!/usr/bin/env python3
"""Sends one message with Python's smtplib, as a real client would.

  smtp_send.py MODE HOST PORT CAFILE FROM TO MESSAGE_FILE [smtputf8]

MODE is starttls, ssl (implicit TLS) or plain. The certificate in CAFILE
is verified for HOST. Exits non-zero with the server's reply on failure.
"""

import smtplib
import ssl
import sys


def main(argv):
    mode, host, port, cafile, sender, rcpt, path = argv[1:8]
    utf8 = len(argv) > 8 and argv[8] == "smtputf8"
    context = ssl.create_default_context(cafile=cafile)
    with open(path, "rb") as f:
        message = f.read()
    if mode == "ssl":
        client = smtplib.SMTP_SSL(host, int(port), local_hostname="python.example", context=context, timeout=60)
    else:
        client = smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=60)
        if mode == "starttls":
            client.starttls(context=context)
    options = ["SMTPUTF8", "BODY=8BITMIME"] if utf8 else []
    try:
        refused = client.sendmail(sender, [rcpt], message, mail_options=options)
    except smtplib.SMTPException as e:
        print("refused: %r" % (e,))
        return 1
    client.quit()
    if refused:
        print("refused recipients: %r" % (refused,))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
