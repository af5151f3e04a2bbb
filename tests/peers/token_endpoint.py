#!/usr/bin/env python3
"""A test OAuth2 token endpoint shaped like Microsoft's identity platform v2.0.

Run: python3 token_endpoint.py --port-file PATH
Binds 127.0.0.1 on a free port and writes the port number to PATH (atomically) once it is
listening. Python 3 standard library only.

Token API (what the proxy talks to):
  POST /{tenant}/oauth2/v2.0/token   form: grant_type=refresh_token, client_id, refresh_token,
                                     scope, optional client_secret
  POST /introspect                   form: token=...  (RFC 7662, for Dovecot)

Admin API (JSON in, JSON out; what tests talk to):
  POST /admin/accounts     {"email"}                  -> {"refresh_token"}
  POST /admin/config       {client_id, client_secret, expires_in, delay_ms, rotation}
                           merged into the config     -> the whole config
  GET  /admin/config                                  -> the whole config
  POST /admin/faults       {"faults": [...], "email": optional}; one fault is consumed per
                           token request (the account's own queue first, then the global one)
  POST /admin/clear_faults                            -> {}
  POST /admin/revoke       {"email"}: revokes every refresh token of the account
  POST /admin/revoke_access_tokens {"email"}: introspection says inactive for its access tokens
  POST /admin/check        {"refresh_token"}          -> {"valid", "revoked", "email"}
  GET  /admin/stats        -> {"total", "per_account": {email: n}, "in_flight", "max_in_flight"}
  POST /admin/reset_stats

Faults: {"status": 500|503|429|408, "retry_after": secs}, {"kind": "drop"},
{"kind": "malformed"}, {"kind": "no_access_token"}, {"kind": "bad_expires_in", "expires_in": x},
{"kind": "error_200"}, {"kind": "aadsts", "code": 700082, "error": "invalid_grant",
"status": 400}, {"kind": "delay", "ms": N}. Faults never change stored state: a client that
keeps what a faulty answer carries is caught by the next request.

Rotation (config "rotation"): every successful refresh issues a new refresh token.
  keep                old tokens stay valid (what Microsoft does)
  revoke_on_use       the old token is revoked when its successor is first presented, which
                      proves the client stored the successor
  revoke_immediately  the presented token is revoked as soon as it is used
"""

import argparse
import datetime
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = re.compile(r"^/[^/]+/oauth2/v2\.0/token$")
ROTATIONS = ("keep", "revoke_on_use", "revoke_immediately")
DEFAULT_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"


class State:
    """Everything the endpoint knows, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.config = {
            "client_id": "test-client",
            "client_secret": "",  # empty: public client, no secret expected
            "expires_in": 3599,
            "delay_ms": 0,
            "rotation": "keep",
        }
        # refresh token -> {"email", "revoked", "predecessor"}
        self.refresh_tokens = {}
        # access token -> {"email", "exp", "scope"}
        self.access_tokens = {}
        self.faults = []
        self.account_faults = {}  # email -> [fault]
        self.reset_stats_locked()

    def reset_stats_locked(self):
        self.total = 0
        self.per_account = {}
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight

    def new_refresh_token_locked(self, email, predecessor=None):
        token = "rt." + secrets.token_urlsafe(32)
        self.refresh_tokens[token] = {
            "email": email,
            "revoked": False,
            "predecessor": predecessor,
        }
        return token

    def take_fault_locked(self, email):
        queue = self.account_faults.get(email) if email else None
        if queue:
            return queue.pop(0)
        if self.faults:
            return self.faults.pop(0)
        return None


STATE = State()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def error_body(error, code, text):
    """An error answer as Microsoft shapes it. `code` 0 means no AADSTS code."""
    trace_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    timestamp = now_iso()
    prefix = "AADSTS%d: " % code if code else ""
    body = {
        "error": error,
        "error_description": "%s%s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s"
        % (prefix, text, trace_id, correlation_id, timestamp),
        "error_codes": [code] if code else [],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code if code
        else "https://login.microsoftonline.com/error",
    }
    return body


AADSTS_TEXT = {
    70000: "The provided value for the 'refresh_token' is not valid.",
    70003: "The app requested an unsupported grant type.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    70043: "The refresh token has expired or is invalid due to sign-in frequency checks by "
    "conditional access.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
    54005: "OAuth2 Authorization code was already redeemed.",
    700016: "Application with identifier was not found in the directory.",
    700082: "The refresh token has expired due to inactivity. The token was issued on a date "
    "and was inactive for 90.00:00:00.",
    7000215: "Invalid client secret provided.",
    7000218: "The request body must contain the following parameter: 'client_assertion' or "
    "'client_secret'.",
    900144: "The request body must contain the following parameter: 'refresh_token'.",
    9002313: "Invalid request. Request is malformed or invalid.",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-token-endpoint"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: tests read stats, not access logs

    # ---- plumbing

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status, body, headers=None, content_type="application/json; charset=utf-8"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(data)

    def form(self, raw):
        parsed = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def drop(self):
        """Close the connection without an answer (the client sees an empty reply)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routing

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/admin/stats":
            with STATE.lock:
                self.send(200, {
                    "total": STATE.total,
                    "per_account": dict(STATE.per_account),
                    "in_flight": STATE.in_flight,
                    "max_in_flight": STATE.max_in_flight,
                })
        elif path == "/admin/config":
            with STATE.lock:
                self.send(200, dict(STATE.config))
        else:
            self.send(404, {"error": "not_found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        raw = self.read_body()
        if TOKEN_PATH.match(path):
            self.token(self.form(raw))
        elif path == "/introspect":
            self.introspect(self.form(raw))
        elif path.startswith("/admin/"):
            try:
                payload = json.loads(raw.decode() or "{}")
                if not isinstance(payload, dict):
                    raise ValueError("a JSON object is expected")
            except ValueError as e:
                self.send(400, {"error": "bad admin request: %s" % e})
                return
            self.admin(path[len("/admin/"):], payload)
        else:
            self.send(404, {"error": "not_found"})

    # ---- admin

    def admin(self, name, p):
        with STATE.lock:
            reply = self.admin_locked(name, p)
        self.send(*reply)

    def admin_locked(self, name, p):
        """The (status, body) answer to one admin call; runs under the lock."""
        if name == "accounts":
            email = p.get("email")
            if not isinstance(email, str) or not email:
                return (400, {"error": "email is required"})
            return (200, {"refresh_token": STATE.new_refresh_token_locked(email)})
        if name == "config":
            unknown = set(p) - set(STATE.config)
            if unknown:
                return (400, {"error": "unknown config keys: %s" % sorted(unknown)})
            if "rotation" in p and p["rotation"] not in ROTATIONS:
                return (400, {"error": "rotation must be one of %s" % (ROTATIONS,)})
            STATE.config.update(p)
            return (200, dict(STATE.config))
        if name == "faults":
            faults = p.get("faults")
            if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
                return (400, {"error": "faults must be a list of objects"})
            email = p.get("email") or ""
            if email:
                STATE.account_faults.setdefault(email, []).extend(faults)
            else:
                STATE.faults.extend(faults)
            queued = STATE.account_faults.get(email, []) if email else STATE.faults
            return (200, {"queued": len(queued)})
        if name == "clear_faults":
            STATE.faults.clear()
            STATE.account_faults.clear()
            return (200, {})
        if name == "revoke":
            email = p.get("email")
            count = 0
            for record in STATE.refresh_tokens.values():
                if record["email"] == email and not record["revoked"]:
                    record["revoked"] = True
                    count += 1
            return (200, {"revoked": count})
        if name == "revoke_access_tokens":
            # Early revocation of issued access tokens (what a password reset does at
            # Microsoft): introspection answers inactive from now on.
            email = p.get("email")
            gone = [t for t, r in STATE.access_tokens.items() if r["email"] == email]
            for t in gone:
                del STATE.access_tokens[t]
            return (200, {"revoked": len(gone)})
        if name == "check":
            record = STATE.refresh_tokens.get(p.get("refresh_token"))
            return (200, {
                "valid": bool(record) and not record["revoked"],
                "revoked": bool(record) and record["revoked"],
                "email": record["email"] if record else None,
            })
        if name == "reset_stats":
            STATE.reset_stats_locked()
            return (200, {})
        else:
            return (404, {"error": "unknown admin call"})

    # ---- RFC 7662 introspection

    def introspect(self, form):
        with STATE.lock:
            record = STATE.access_tokens.get(form.get("token", ""))
            if record and record["exp"] > time.time():
                self.send(200, {"active": True, "email": record["email"],
                                "exp": int(record["exp"]), "scope": record["scope"],
                                "token_type": "Bearer"})
            else:
                self.send(200, {"active": False})

    # ---- the token endpoint

    def token(self, form):
        presented = form.get("refresh_token", "")
        with STATE.lock:
            record = STATE.refresh_tokens.get(presented)
            email = record["email"] if record else ""
            STATE.total += 1
            if email:
                STATE.per_account[email] = STATE.per_account.get(email, 0) + 1
            STATE.in_flight += 1
            STATE.max_in_flight = max(STATE.max_in_flight, STATE.in_flight)
            fault = STATE.take_fault_locked(email)
            delay_ms = STATE.config["delay_ms"]
        try:
            if fault and fault.get("kind") == "delay":
                delay_ms += int(fault.get("ms", 0))
                fault = None
            if delay_ms > 0:
                time.sleep(delay_ms / 1000.0)
            if fault:
                self.answer_fault(fault, form)
            else:
                self.answer_grant(form, presented)
        finally:
            with STATE.lock:
                STATE.in_flight -= 1

    @staticmethod
    def error_reply(status, error, code):
        return (status, error_body(error, code, AADSTS_TEXT.get(code, "Error.")))

    def fake_success(self, **overrides):
        """A success-shaped answer whose tokens are not remembered (faults change nothing)."""
        body = {
            "token_type": "Bearer",
            "scope": DEFAULT_SCOPE,
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "at.fault." + secrets.token_urlsafe(24),
            "refresh_token": "rt.fault." + secrets.token_urlsafe(24),
        }
        body.update(overrides)
        return body

    def answer_fault(self, fault, form):
        kind = fault.get("kind")
        if kind is None and "status" in fault:
            status = int(fault["status"])
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = fault["retry_after"]
            error = "temporarily_unavailable" if status in (408, 429, 503) else "server_error"
            self.send(status, error_body(error, 0, "The service is temporarily unavailable."),
                      headers)
        elif kind == "drop":
            self.drop()
        elif kind == "malformed":
            # Looks like the start of a success, then stops: a parser must not take anything.
            self.send(200, b'{"token_type":"Bearer","access_token":"at.malformed.')
        elif kind == "no_access_token":
            body = self.fake_success()
            del body["access_token"]
            self.send(200, body)
        elif kind == "bad_expires_in":
            self.send(200, self.fake_success(expires_in=fault.get("expires_in")))
        elif kind == "error_200":
            self.send(200, error_body("invalid_grant", 70008, AADSTS_TEXT[70008]))
        elif kind == "aadsts":
            code = int(fault.get("code", 70008))
            self.send(*self.error_reply(int(fault.get("status", 400)),
                                        fault.get("error", "invalid_grant"), code))
        else:
            self.send(500, {"error": "unknown fault %r" % (fault,)})

    def answer_grant(self, form, presented):
        with STATE.lock:
            status, body = self.grant_locked(form, presented)
        self.send(status, body)

    def grant_locked(self, form, presented):
        """The (status, body) answer to a refresh grant; runs under the lock."""
        config = dict(STATE.config)
        if form.get("grant_type") != "refresh_token":
            return self.error_reply(400, "unsupported_grant_type", 70003)
        if form.get("client_id") != config["client_id"]:
            return self.error_reply(400, "unauthorized_client", 700016)
        if config["client_secret"]:
            if "client_secret" not in form:
                return self.error_reply(401, "invalid_client", 7000218)
            if form["client_secret"] != config["client_secret"]:
                return self.error_reply(401, "invalid_client", 7000215)
        if not presented:
            return self.error_reply(400, "invalid_request", 900144)
        record = STATE.refresh_tokens.get(presented)
        if record is None:
            return self.error_reply(400, "invalid_grant", 70000)
        if record["revoked"]:
            return self.error_reply(400, "invalid_grant", 50173)
        email = record["email"]
        rotation = config["rotation"]
        if rotation == "revoke_immediately":
            record["revoked"] = True
        elif rotation == "revoke_on_use" and record["predecessor"]:
            previous = STATE.refresh_tokens.get(record["predecessor"])
            if previous:
                previous["revoked"] = True
        new_refresh = STATE.new_refresh_token_locked(email, predecessor=presented)
        expires_in = config["expires_in"]
        access = "at." + secrets.token_urlsafe(32)
        scope = form.get("scope") or DEFAULT_SCOPE
        STATE.access_tokens[access] = {
            "email": email,
            "exp": time.time() + float(expires_in),
            "scope": scope,
        }
        return (200, {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access,
            "refresh_token": new_refresh,
        })


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    server = Server(("127.0.0.1", args.port), Handler)
    # The socket listens from here on; publish the port atomically so a reader never sees a
    # half-written number.
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, args.port_file)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
