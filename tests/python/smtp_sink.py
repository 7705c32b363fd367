#!/usr/bin/env python3
"""A private SMTP relay for the alerts tests (aiosmtpd), on 127.0.0.1.

Usage: smtp_sink.py PORT OUTDIR MODE [CERT KEY [USER PASSWORD]]

MODE is `accept` (every message is written to OUTDIR as N.eml, with its
envelope in N.json) or `refuse` (every RCPT gets 550). With CERT and KEY it
offers STARTTLS and requires it; with USER and PASSWORD it requires AUTH
(PLAIN or LOGIN) with them. It runs until it is killed.
"""

import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, outdir, mode):
        self.outdir = outdir
        self.mode = mode
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "refuse":
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.outdir, str(self.count))
        with open(base + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "authenticated": bool(session.authenticated),
                },
                f,
            )
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".json.tmp", base + ".json")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: queued"


def main():
    port, outdir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rest = sys.argv[4:]
    kwargs = {}
    if len(rest) >= 2:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(rest[0], rest[1])
        kwargs.update(tls_context=context, require_starttls=True)
    if len(rest) >= 4:
        user, password = rest[2].encode(), rest[3].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user
                and auth_data.password == password
            )
            return AuthResult(success=ok)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
    controller = Controller(Sink(outdir, mode), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("listening", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
