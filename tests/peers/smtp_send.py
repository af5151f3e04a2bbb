#!/usr/bin/env python3
"""A real SMTP sender for the submission tests: Python's smtplib (stdlib).

Run: smtp_send.py --port P --cafile CA --user U --password PW [options]
Connects to 127.0.0.1:P as "localhost" (implicit TLS, or --starttls), authenticates with
--auth plain|login, sends --count messages (each --size bytes of body, or --body-file) from
--from to --to, and prints one JSON object: {"ok": true, "sent": N} or
{"ok": false, "stage": ..., "code": N, "error": "..."}. --concurrent K runs K such sessions
at once (threads) and prints {"ok": all ok, "results": [...]}.
"""

import argparse
import json
import smtplib
import ssl
import sys
import threading


def make_body(size, seed):
    """About `size` bytes of CRLF-terminated lines, different for each seed."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b"line %d of test message %d\r\n" % (i, seed)
        i += 1
    return bytes(out)


def message(args, seed):
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    else:
        body = make_body(args.size, seed)
    head = ("From: %s\r\nTo: %s\r\nSubject: test %d\r\n\r\n" % (args.sender, args.to, seed)).encode()
    return head + body


def one(args, seed):
    ctx = ssl.create_default_context(cafile=args.cafile)
    try:
        if args.starttls:
            s = smtplib.SMTP("localhost", args.port, timeout=60)
            s.ehlo("sender.test")
            s.starttls(context=ctx)
        else:
            s = smtplib.SMTP_SSL("localhost", args.port, context=ctx, timeout=60)
        s.ehlo("sender.test")
    except (OSError, smtplib.SMTPException) as e:
        return {"ok": False, "stage": "connect", "code": getattr(e, "smtp_code", 0),
                "error": str(e)}
    try:
        # smtplib's auth() with its own PLAIN (initial response on the AUTH line) and LOGIN (every
        # step on a 334 continuation) mechanisms.
        s.user, s.password = args.user, args.password
        if args.auth == "login":
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        else:
            s.auth("PLAIN", s.auth_plain, initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as e:
        return {"ok": False, "stage": "auth", "code": e.smtp_code,
                "error": e.smtp_error.decode(errors="replace")}
    except (OSError, smtplib.SMTPException) as e:
        return {"ok": False, "stage": "auth", "code": getattr(e, "smtp_code", 0),
                "error": str(getattr(e, "smtp_error", e))}
    sent = 0
    try:
        for i in range(args.count):
            s.sendmail(args.sender, [args.to], message(args, seed * 1000 + i))
            sent += 1
        s.quit()
    except (OSError, smtplib.SMTPException) as e:
        return {"ok": False, "stage": "send", "code": getattr(e, "smtp_code", 0),
                "error": str(e), "sent": sent}
    return {"ok": True, "sent": sent}


def raw(args):
    """Implicit TLS; after the greeting, sends the bytes of --raw (with {auth} replaced by the
    base64 PLAIN response of --user/--password) in one write; returns everything the server
    sent until it closed."""
    import base64
    import socket
    ctx = ssl.create_default_context(cafile=args.cafile)
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", args.port), timeout=30),
                           server_hostname="localhost")
    got = b""
    while b"\r\n" not in got:
        got += sock.recv(4096)
    with open(args.raw, "rb") as f:
        data = f.read()
    plain = base64.b64encode(b"\0" + args.user.encode() + b"\0" + args.password.encode())
    sock.sendall(data.replace(b"{auth}", plain))
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (OSError, ssl.SSLError):
        pass
    return {"ok": True, "transcript": got.decode(errors="replace")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--auth", choices=["plain", "login"], default="plain")
    p.add_argument("--from", dest="sender", default="sender@example.com")
    p.add_argument("--to", default="rcpt@example.net")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--body-file")
    p.add_argument("--concurrent", type=int, default=0)
    p.add_argument("--raw")
    args = p.parse_args()
    if args.raw:
        print(json.dumps(raw(args)))
        return 0
    if args.concurrent:
        results = [None] * args.concurrent

        def run(k):
            results[k] = one(args, k)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(args.concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"ok": all(r and r["ok"] for r in results), "results": results}))
    else:
        print(json.dumps(one(args, 0)))


if __name__ == "__main__":
    sys.exit(main())
