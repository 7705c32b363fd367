#!/usr/bin/python3
"""Prints how getmail6 writes a message into a Maildir, using getmail's own
Message class, so that a test can check getmail delivered exactly what it
was sent. (getmail re-serialises every message through Python's email
package: it refolds long header lines and adds Return-Path.)

  getmail_render.py MESSAGE_FILE > rendered
"""

import sys

from getmailcore.message import Message

with open(sys.argv[1], "rb") as f:
    raw = f.read()
# getmail's POP3 retriever hands over the lines without their CRLF and an
# empty last one, so that the message ends with a line ending.
lines = raw.split(b"\r\n")
message = Message(fromlines=lines)
sys.stdout.buffer.write(message.flatten(delivered_to=False, received=False))
