#!/usr/bin/env python3
"""A real IMAP client for the integration tests (Python's imaplib), driven by one scenario per
run. Prints one JSON object on stdout: {"ok": bool, ...results}, or {"ok": false, "error": ...}.

  imap_client.py --port P --cafile CA [--starttls] [--host H]
                 (--user U --password PW | --user U --xoauth2-token T)
                 SCENARIO [args]

Scenarios:
  login            log in, report the capabilities, LOGOUT
  fetch            log in, SELECT INBOX, FETCH every message body: {"messages": {uid: sha256}}
  append BYTES     APPEND a message of about BYTES bytes, then FETCH it back: {"size", "sha256"}
  idle             SELECT INBOX, IDLE; a second connection (same login) APPENDs a message; report
                   whether the idling session saw "* n EXISTS"
  concurrent N     N logins at once (threads), each SELECT INBOX + LOGOUT: {"succeeded": k}
"""
import argparse
import base64
import hashlib
import imaplib
import json
import socket
import ssl
import sys
import threading
import time


def connect(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    if args.starttls:
        conn = imaplib.IMAP4(args.host, args.port, timeout=60)
        conn.starttls(ssl_context=ctx)
    else:
        conn = imaplib.IMAP4_SSL(args.host, args.port, ssl_context=ctx, timeout=60)
    if args.xoauth2_token:
        # SASL-IR in one line: imaplib's own authenticate() writes the continuation answer and
        # its CRLF separately, which Dovecot 2.3 over TLS can stall on.
        raw = "user=%s\x01auth=Bearer %s\x01\x01" % (args.user, args.xoauth2_token)
        ir = base64.b64encode(raw.encode()).decode()
        typ, data = conn._simple_command("AUTHENTICATE", "XOAUTH2", ir)
        if typ != "OK":
            raise imaplib.IMAP4.error("AUTHENTICATE failed: %r" % data)
        conn.state = "AUTH"
    else:
        conn.login(args.user, args.password)
    return conn


def capabilities(conn):
    typ, data = conn.capability()
    return data[0].decode().split()


def scenario_login(args):
    conn = connect(args)
    caps = capabilities(conn)
    conn.logout()
    return {"capabilities": caps}


def scenario_fetch(args):
    conn = connect(args)
    conn.select("INBOX")
    typ, data = conn.uid("SEARCH", None, "ALL")
    messages = {}
    total = 0
    for uid in data[0].split():
        typ, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        body = parts[0][1]
        total += len(body)
        messages[uid.decode()] = hashlib.sha256(body).hexdigest()
    conn.logout()
    return {"messages": messages, "bytes": total}


def make_message(size):
    header = ("From: test@example.com\r\nTo: user@example.com\r\nSubject: big %d\r\n"
              "Message-ID: <%f@test>\r\n\r\n" % (size, time.time()))
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    # Whole CRLF lines only: imaplib turns a lone CR at the end into CRLF.
    body = line * max(0, (size - len(header)) // len(line))
    return (header + body).encode()


def scenario_append(args):
    message = make_message(int(args.extra[0]))
    conn = connect(args)
    typ, data = conn.append("INBOX", None, None, message)
    if typ != "OK":
        raise RuntimeError("APPEND failed: %r" % data)
    conn.select("INBOX")
    typ, data = conn.uid("SEARCH", None, "ALL")
    last = data[0].split()[-1]
    typ, parts = conn.uid("FETCH", last, "(BODY.PEEK[])")
    body = parts[0][1]
    conn.logout()
    return {"sent_size": len(message), "sent_sha256": hashlib.sha256(message).hexdigest(), "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest()}


def scenario_idle(args):
    conn = connect(args)
    conn.select("INBOX")
    tag = conn._new_tag().decode()
    conn.send(("%s IDLE\r\n" % tag).encode())
    first = conn.readline().decode().strip()
    if not first.startswith("+"):
        raise RuntimeError("IDLE not accepted: %s" % first)

    def deliver():
        time.sleep(0.3)
        other = connect(args)
        other.append("INBOX", None, None, make_message(200))
        other.logout()

    t = threading.Thread(target=deliver)
    t.start()
    seen = None
    conn.sock.settimeout(20)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = conn.readline().decode().strip()
        if line.endswith("EXISTS"):
            seen = line
            break
        if not line:
            break
    t.join()
    conn.send(b"DONE\r\n")
    done = ""
    while not done.startswith(tag):
        done = conn.readline().decode().strip()
        if not done:
            break
    conn.logout()
    return {"exists": seen, "done": done}


def scenario_concurrent(args):
    n = int(args.extra[0])
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def one():
        try:
            barrier.wait(30)
            conn = connect(args)
            typ, _ = conn.select("INBOX")
            conn.logout()
            ok = typ == "OK"
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            ok = False
            with lock:
                results.append(str(e)[:200])
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, str)]
    return {"succeeded": sum(1 for r in results if r is True), "errors": errors[:5]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--xoauth2-token", default="")
    p.add_argument("scenario")
    p.add_argument("extra", nargs="*")
    args = p.parse_args()
    try:
        result = globals()["scenario_" + args.scenario](args)
        result["ok"] = True
    except imaplib.IMAP4.error as e:
        result = {"ok": False, "error": str(e)}
    except (OSError, RuntimeError, ssl.SSLError) as e:
        result = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
