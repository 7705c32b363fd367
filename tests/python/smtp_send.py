#!/usr/bin/env python3
"""Sends one message with Python's smtplib, as a real client would.

  smtp_send.py MODE HOST PORT CAFILE FROM MESSAGE_FILE --to ADDR [--to ADDR ...]
               [--smtputf8] [--login USER --password-file FILE]

MODE is starttls, ssl (implicit TLS) or plain. The certificate in CAFILE is
verified for HOST. Exits 1 printing the server's refusal (code first).
"""

import argparse
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["starttls", "ssl", "plain"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("cafile")
    p.add_argument("sender")
    p.add_argument("message")
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--login")
    p.add_argument("--password-file")
    a = p.parse_args()
    context = ssl.create_default_context(cafile=a.cafile)
    with open(a.message, "rb") as f:
        message = f.read()
    try:
        if a.mode == "ssl":
            client = smtplib.SMTP_SSL(a.host, a.port, local_hostname="python.example", context=context, timeout=120)
        else:
            client = smtplib.SMTP(a.host, a.port, local_hostname="python.example", timeout=120)
            if a.mode == "starttls":
                client.starttls(context=context)
        if a.login:
            with open(a.password_file) as f:
                client.login(a.login, f.readline().rstrip("\r\n"))
        options = ["SMTPUTF8", "BODY=8BITMIME"] if a.smtputf8 else []
        refused = client.sendmail(a.sender, a.to, message, mail_options=options)
        client.quit()
    except smtplib.SMTPResponseException as e:
        print("%d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace")))
        return 1
    except smtplib.SMTPRecipientsRefused as e:
        print("refused recipients: %r" % (e.recipients,))
        return 1
    except smtplib.SMTPException as e:
        print("refused: %r" % (e,))
        return 1
    if refused:
        print("refused recipients: %r" % (refused,))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
