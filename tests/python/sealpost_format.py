#!/usr/bin/env python3
"""An independent implementation of Sealpost's message file format (version 1),
written from README.md alone with PyNaCl (libsodium), sharing no code with
Sealpost. The tests use it both ways:

  read  MAILBOX_DIR PASSWORD_FILE MESSAGE_FILE OUT_FILE
        unwrap the mailbox key with the password, decrypt MESSAGE_FILE,
        write the message bytes to OUT_FILE and print the metadata JSON.
  write MAILBOX_DIR METADATA_JSON BODY_FILE
        seal BODY_FILE to the mailbox public key as a new message file in
        MAILBOX_DIR/messages/ and print its name.

It doubles as the backup-recovery recipe the README describes.
"""

import base64
import json
import os
import struct
import sys
import time

import nacl.bindings as b
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.pwhash import argon2id
from nacl.secret import SecretBox

MAGIC = b"SEALPST1"
CHUNK = 64 * 1024
TAG_MESSAGE = b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = b.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def load_json(path):
    with open(path, "rb") as f:
        return json.load(f)


def unwrap_secret_key(mailbox_dir, password):
    key_file = load_json(os.path.join(mailbox_dir, "secret-key.json"))
    if key_file["kdf"] != "argon2id13":
        raise SystemExit("unknown kdf " + key_file["kdf"])
    salt = base64.b64decode(key_file["salt"])
    wrapping_key = argon2id.kdf(
        SecretBox.KEY_SIZE, password, salt,
        opslimit=key_file["opslimit"], memlimit=key_file["memlimit"],
    )
    nonce = base64.b64decode(key_file["nonce"])
    wrapped = base64.b64decode(key_file["wrapped_key"])
    return SecretBox(wrapping_key).decrypt(wrapped, nonce)


def public_key(mailbox_dir):
    info = load_json(os.path.join(mailbox_dir, "mailbox.json"))
    return base64.b64decode(info["public_key"])


def read_message(mailbox_dir, password, message_file, out_file):
    secret = unwrap_secret_key(mailbox_dir, password)
    with open(message_file, "rb") as f:
        data = f.read()
    if data[:8] != MAGIC:
        raise SystemExit("bad magic")
    key = SealedBox(PrivateKey(secret)).decrypt(data[8:88])
    state = b.crypto_secretstream_xchacha20poly1305_state()
    b.crypto_secretstream_xchacha20poly1305_init_pull(state, data[88:112], key)
    at = 112
    records = []
    final = False
    while at < len(data):
        if final:
            raise SystemExit("bytes after the final record")
        (length,) = struct.unpack(">I", data[at:at + 4])
        record = data[at + 4:at + 4 + length]
        if len(record) != length:
            raise SystemExit("truncated record")
        at += 4 + length
        plain, tag = b.crypto_secretstream_xchacha20poly1305_pull(state, record, None)
        if tag == TAG_FINAL:
            final = True
        elif tag != TAG_MESSAGE:
            raise SystemExit("unexpected tag %d" % tag)
        records.append(plain)
    if not final:
        raise SystemExit("no final record")
    metadata = json.loads(records[0])
    body = b"".join(records[1:])
    if len(body) != metadata["size"]:
        raise SystemExit("size mismatch")
    with open(out_file, "wb") as f:
        f.write(body)
    print(json.dumps(metadata))


def write_message(mailbox_dir, metadata_json, body_file):
    with open(body_file, "rb") as f:
        body = f.read()
    metadata = json.loads(metadata_json)
    metadata["size"] = len(body)
    key = b.crypto_secretstream_xchacha20poly1305_keygen()
    sealed = SealedBox(PublicKey(public_key(mailbox_dir))).encrypt(key)
    state = b.crypto_secretstream_xchacha20poly1305_state()
    header = b.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    out = [MAGIC, sealed, header]

    def push(plain, tag):
        record = b.crypto_secretstream_xchacha20poly1305_push(state, plain, None, tag)
        out.append(struct.pack(">I", len(record)) + record)

    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    push(json.dumps(metadata).encode(), TAG_MESSAGE)
    for i, chunk in enumerate(chunks):
        push(chunk, TAG_FINAL if i == len(chunks) - 1 else TAG_MESSAGE)
    name = "%016d-%s" % (int(time.time() * 1e6), os.urandom(8).hex())
    tmp = os.path.join(mailbox_dir, "tmp", name + ".msg")
    with open(tmp, "wb") as f:
        f.write(b"".join(out))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(mailbox_dir, "messages", name + ".msg"))
    print(name)


def main(argv):
    if len(argv) == 6 and argv[1] == "read":
        with open(argv[3], "rb") as f:
            password = f.read().split(b"\n")[0].rstrip(b"\r")
        read_message(argv[2], password, argv[4], argv[5])
    elif len(argv) == 5 and argv[1] == "write":
        write_message(argv[2], argv[3], argv[4])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
