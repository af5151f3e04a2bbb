#!/usr/bin/env python3
"""A test OAuth2 token endpoint shaped like Microsoft's identity platform v2.0.

Run: python3 token_endpoint.py --port-file PATH
Binds 127.0.0.1 on a free port and writes the port number to PATH (atomically) once it is
listening. Python 3 standard library only, plus the `openssl` command for RS256 client
assertions (the stdlib has no RSA).

Token API (what the program talks to; {tenant} is any path segment, as at Microsoft):
  POST /{tenant}/oauth2/v2.0/token   form, by grant_type:
      refresh_token        client_id, refresh_token, scope, optional client_secret
      authorization_code   client_id, code, redirect_uri (the authorize one), code_verifier
                           (PKCE S256, RFC 7636); the code is single-use
      urn:ietf:params:oauth:grant-type:device_code
                           client_id, device_code (RFC 8628 s3.4); answers per device_script
      client_credentials   client_id, scope=<resource>/.default, and client_secret or
                           client_assertion_type=urn:ietf:params:oauth:client-assertion-type:
                           jwt-bearer + client_assertion (RFC 7523, RS256, x5t#S256 header,
                           aud = the token URL this request hit, iss = sub = client_id, jti,
                           nbf, exp); apps only (see /admin/apps); no refresh_token issued
      Every success carries an id_token when the scope holds `openid` (not client_credentials).
  GET  /{tenant}/oauth2/v2.0/authorize  client_id, response_type=code, redirect_uri
                                     (http://localhost[:port]/... or 127.0.0.1), scope, state,
                                     code_challenge, code_challenge_method=S256, login_hint,
                                     nonce -> 302 to redirect_uri?code=...&state=...
                                     (or ?error=...&error_description=AADSTS...&state=...);
                                     a bad redirect_uri gets a 400 page (AADSTS50011), no redirect
  POST /{tenant}/oauth2/v2.0/devicecode  form: client_id, scope -> {device_code, user_code,
                                     verification_uri, expires_in, interval, message}
  GET  /devicelogin                  a page (the verification_uri; nothing to do there)
  POST /introspect                   form: token=...  (RFC 7662, for Dovecot)

Who signs in: the /admin/signin user when set, else the authorize request's login_hint, else
the account last added with /admin/accounts. Access tokens introspect as the sign-in's
"mailbox" (default: the signed-in user): Dovecot sends introspection only the token, so a
shared-mailbox test says there which mailbox alice's tokens open.

Admin API (JSON in, JSON out; what tests talk to):
  POST /admin/accounts     {"email", "password"?}     -> {"refresh_token"}
                           (password is accepted and kept, never checked)
  POST /admin/config       {client_id, client_secret, expires_in, delay_ms, rotation,
                           tenant_id} merged into the config -> the whole config
  GET  /admin/config                                  -> the whole config
  POST /admin/faults       {"faults": [...], "email": optional}; one fault is consumed per
                           token request (the account's own queue first, then the global one)
  POST /admin/clear_faults                            -> {}
  POST /admin/revoke       {"email"}: revokes every refresh token the account signed in for
  POST /admin/revoke_access_tokens {"email"}: introspection says inactive for the access tokens
                           that open mailbox `email`
  POST /admin/check        {"refresh_token"}          -> {"valid", "revoked", "email", "mailbox"}
  GET  /admin/stats        -> {"total", "per_account": {email: n}, "in_flight", "max_in_flight",
                           "per_grant": {grant_type: n}, "authorize": n, "devicecode": n}
  POST /admin/reset_stats  zeroes the counters and forgets the device polls
  POST /admin/signin       {"email", "mailbox"?, "name"?}: who signs in at the authorize and
                           device endpoints from now on; {"email": ""} goes back to the default
                                                      -> {"email", "mailbox", "name"}
  POST /admin/authorize_outcome {"error", "code"?, "description"?} the next authorize request
                           redirects with that error (code: the AADSTS number; description:
                           replaces the canned text); or {"state": "..."} the next success
                           redirect carries that state instead of the request's. Consumed once.
  POST /admin/id_token_fault {"kind": "not_a_jwt" | "bad_payload" | "no_identity"}: the next
                           id_token issued is not a JWT / has a payload that is not base64url
                           JSON / has no preferred_username nor email. Consumed once.
  POST /admin/device_script {"steps": [...], "interval"?, "expires_in"?, "missing"?: [field]}
                           how every later device code behaves; {} restores the default
                           (steps ["pending", "ok"], interval 5, expires_in 900). One step is
                           taken per poll: pending (authorization_pending), slow_down, ok
                           (tokens), expired (expired_token), declined (authorization_declined),
                           access_denied, bad_code (bad_verification_code). When the steps run
                           out the last one repeats, except after ok: that device code is then
                           redeemed (invalid_grant AADSTS54005). A device code past expires_in
                           answers expired_token whatever the script says. "missing" drops those
                           fields from the devicecode answer. Forgets the device polls.
  GET  /admin/device_polls -> [{"t": monotonic seconds, "result": step or fault,
                           "interval": the interval in force for the poll that follows}]
  POST /admin/apps         {"client_id", "client_secret"?, "certificate_pem"?, "mailbox"}
                           registers a confidential client (client credentials); its access
                           tokens introspect as {"active": true, "email": mailbox}
                                                      -> {"client_id", "x5t#S256"?}

Faults: {"status": 500|503|429|408, "retry_after": secs}, {"kind": "drop"},
{"kind": "malformed"}, {"kind": "no_access_token"}, {"kind": "bad_expires_in", "expires_in": x},
{"kind": "error_200"}, {"kind": "aadsts", "code": 700082, "error": "invalid_grant",
"status": 400}, {"kind": "delay", "ms": N}. Faults never change stored state: a client that
keeps what a faulty answer carries is caught by the next request. They apply to every grant
type; the account of a request is the refresh token's owner, the code's or device code's
signed-in user, or the app's mailbox.

Rotation (config "rotation"): every successful refresh issues a new refresh token.
  keep                old tokens stay valid (what Microsoft does)
  revoke_on_use       the old token is revoked when its successor is first presented, which
                      proves the client stored the successor
  revoke_immediately  the presented token is revoked as soon as it is used

Config "refresh_openid": "allow" (default) issues an id_token on a refresh that asks for openid;
"refuse" answers such a refresh AADSTS70000 (scopes not granted), as Microsoft does for a refresh
token whose grant did not include openid.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Microsoft's v2.0 endpoints: /{tenant}/oauth2/v2.0/{token,authorize,devicecode}, where tenant is
# common, organizations, consumers, a tenant id or a domain.
ENDPOINT_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/(token|authorize|devicecode)$")
ROTATIONS = ("keep", "revoke_on_use", "revoke_immediately")
DEFAULT_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 s3.4
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 s2.2
GRANTS = ("refresh_token", "authorization_code", DEVICE_GRANT, "client_credentials")
DEVICE_STEPS = ("pending", "slow_down", "ok", "expired", "declined", "access_denied", "bad_code")
# Steps after which the device code answers the same forever (ok: it is redeemed).
DEVICE_TERMINAL = ("ok", "expired", "declined", "access_denied")
DEFAULT_DEVICE_SCRIPT = {"steps": ["pending", "ok"], "interval": 5, "expires_in": 900,
                         "missing": []}
DEVICE_FIELDS = ("device_code", "user_code", "verification_uri", "expires_in", "interval",
                 "message")
ID_TOKEN_FAULTS = ("not_a_jwt", "bad_payload", "no_identity")
CODE_LIFETIME = 600  # seconds; Microsoft's authorization codes live about ten minutes
# RFC 7636 s4.1: code_verifier = 43*128unreserved; s4.2: the S256 challenge is 43 base64url chars.
PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """Raises ValueError (binascii.Error is one) on anything that is not base64url."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9\-_]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def display_name(email):
    local = email.split("@", 1)[0]
    return " ".join(part.capitalize() for part in re.split(r"[._-]+", local) if part) or email


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
            "refresh_openid": "allow",
            # The home tenant of every signed-in user (id_token tid and iss).
            "tenant_id": "3f6a2c1e-8b4d-4e9a-9c7f-5d1b2a3e4f60",
        }
        # refresh token -> {"email" (who signed in), "mailbox" (what its access tokens open),
        # "client_id" (None: any), "revoked", "predecessor"}
        self.refresh_tokens = {}
        # access token -> {"email" (the mailbox introspection names), "exp", "scope"}
        self.access_tokens = {}
        self.faults = []
        self.account_faults = {}  # email -> [fault]
        self.accounts = {}  # email -> {"password"}
        self.last_account = ""
        self.signin = None  # {"email", "mailbox", "name"}: who signs in, when set by a test
        self.authorize_outcome = None  # consumed by the next authorize request
        self.id_token_fault = None  # consumed by the next id_token
        # authorization code -> {"client_id", "redirect_uri", "challenge", "scope", "user",
        # "nonce", "expires", "redeemed"}
        self.codes = {}
        self.device_script = dict(DEFAULT_DEVICE_SCRIPT)
        # device code -> {"client_id", "scope", "steps", "interval", "expires", "done", "user"}
        self.device_codes = {}
        # client id -> {"client_secret", "mailbox", "x5t", "pubkey_path"}
        self.apps = {}
        self.assertion_ids = set()  # every client assertion jti seen (RFC 7523 s3, item 7)
        self.id_token_key = secrets.token_bytes(32)
        self.workdir = None  # set by main(): where public keys and signatures go for openssl
        self.reset_stats_locked()

    def reset_stats_locked(self):
        self.total = 0
        self.per_account = {}
        self.per_grant = {}
        self.authorize_count = 0
        self.devicecode_count = 0
        self.device_polls = []
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight

    def new_refresh_token_locked(self, email, predecessor=None, mailbox=None, client_id=None):
        token = "rt." + secrets.token_urlsafe(32)
        self.refresh_tokens[token] = {
            "email": email,
            "mailbox": mailbox or email,
            "client_id": client_id,
            "revoked": False,
            "predecessor": predecessor,
        }
        return token

    def new_access_token_locked(self, mailbox, scope, expires_in):
        access = "at." + secrets.token_urlsafe(32)
        self.access_tokens[access] = {
            "email": mailbox,
            "exp": time.time() + float(expires_in),
            "scope": scope,
        }
        return access

    def take_fault_locked(self, email):
        queue = self.account_faults.get(email) if email else None
        if queue:
            return queue.pop(0)
        if self.faults:
            return self.faults.pop(0)
        return None

    def known_client_locked(self, client_id):
        return client_id == self.config["client_id"] or client_id in self.apps

    def signed_in_locked(self, login_hint=""):
        """Who signs in at the authorize or device endpoint now, or None when nobody can."""
        if self.signin:
            return dict(self.signin)
        email = login_hint or self.last_account
        if not email:
            return None
        return {"email": email, "mailbox": email, "name": display_name(email)}

    def request_account_locked(self, form):
        """The account a token request concerns (for per-account stats and faults), or ''."""
        grant = form.get("grant_type")
        if grant == "refresh_token":
            record = self.refresh_tokens.get(form.get("refresh_token", ""))
            return record["email"] if record else ""
        if grant == "authorization_code":
            record = self.codes.get(form.get("code", ""))
            return record["user"]["email"] if record else ""
        if grant == DEVICE_GRANT:
            record = self.device_codes.get(form.get("device_code", ""))
            return record["user"]["email"] if record and record["user"] else ""
        if grant == "client_credentials":
            app = self.apps.get(form.get("client_id", ""))
            return app["mailbox"] if app else ""
        return ""


STATE = State()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def error_description(code, text):
    """Microsoft's error_description: the AADSTS code, the text, then trace lines."""
    prefix = "AADSTS%d: " % code if code else ""
    return "%s%s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
        prefix, text, uuid.uuid4(), uuid.uuid4(), now_iso())


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
    50011: "The redirect URI specified in the request does not match the redirect URI used in "
    "the authorization request.",
    50013: "Assertion failed signature validation.",
    50027: "JWT token is invalid or malformed.",
    50058: "A silent sign-in request was sent but no user is signed in.",
    54005: "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
    "or use an existing refresh token.",
    65001: "The user or administrator has not consented to use the application with ID "
    "'{client_id}'. Send an interactive authorization request for this user and resource.",
    65004: "User declined to consent to access the app.",
    50020: "User account '{email}' from identity provider 'https://sts.windows.net/"
    "{tenant_id}/' does not exist in tenant 'Contoso' and cannot access the application "
    "'{client_id}' in that tenant. The account needs to be added as an external user in the "
    "tenant first. Sign out and sign in again with a different Azure Active Directory user "
    "account.",
    70000: "The provided value for the 'refresh_token' is not valid.",
    70003: "The app requested an unsupported grant type.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    70016: "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    70018: "Invalid verification code due to User typing in wrong user code for device code "
    "flow.",
    70020: "The provided value for the input parameter 'device_code' is not valid. Device codes "
    "expire after the time given in expires_in.",
    70043: "The refresh token has expired or is invalid due to sign-in frequency checks by "
    "conditional access.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
    501481: "The Code_Verifier does not match the code_challenge supplied in the authorization "
    "request.",
    501491: "Invalid size of Code_Challenge parameter.",
    700016: "Application with identifier '{client_id}' was not found in the directory 'Test'. "
    "This can happen if the application has not been installed by the administrator of the "
    "tenant or consented to by any user in the tenant. You may have sent your authentication "
    "request to the wrong tenant.",
    700021: "Client assertion application identifier doesn't match 'client_id' parameter.",
    700024: "Client assertion is not within its valid time range.",
    700027: "Client assertion failed signature validation.",
    700082: "The refresh token has expired due to inactivity. The token was issued on a date "
    "and was inactive for 90.00:00:00.",
    1002012: "The provided value for scope is not valid. Client credential flows must have a "
    "scope value with /.default suffixed to the resource identifier (application ID URI).",
    7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the "
    "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    7000218: "The request body must contain the following parameter: 'client_assertion' or "
    "'client_secret'.",
    900144: "The request body must contain the following parameter: 'refresh_token'.",
    9002313: "Invalid request. Request is malformed or invalid.",
    9002325: "Proof Key for Code Exchange is required for cross-origin authorization code "
    "redemption.",
}

# The AADSTS code an authorize error outcome carries when the test names none.
AUTHORIZE_ERROR_CODES = {
    "access_denied": 65004,
    "consent_required": 65001,
    "login_required": 50058,
    "unauthorized_client": 700016,
    "interaction_required": 50020,
}


class BlankMissing(dict):
    def __missing__(self, key):
        return ""


def aadsts_text(code, **values):
    """The canned text of `code`, its {placeholders} filled from `values` (missing ones empty:
    a scripted fault knows no client id)."""
    return AADSTS_TEXT.get(code, "Error.").format_map(BlankMissing(values))


def error_reply(status, error, code, text=None, **values):
    return (status, error_body(error, code, text or aadsts_text(code, **values)))


def with_query(uri, params):
    """`uri` with `params` appended to its query (an existing query is kept)."""
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    query = parts.query + "&" + query if parts.query else query
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def loopback_redirect(uri):
    """A native app's loopback redirect: http on localhost / 127.0.0.1, any port (RFC 8252 s7.3;
    Microsoft ignores the port for localhost redirect URIs)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return (parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")
            and not parts.fragment and not parts.username)


def verify_rs256(pubkey_path, data, signature):
    """RSASSA-PKCS1-v1_5 with SHA-256 (JWS RS256, RFC 7518 s3.3), by the openssl command."""
    with tempfile.TemporaryDirectory(dir=STATE.workdir) as tmp:
        data_path = os.path.join(tmp, "data")
        sig_path = os.path.join(tmp, "sig")
        with open(data_path, "wb") as f:
            f.write(data)
        with open(sig_path, "wb") as f:
            f.write(signature)
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", pubkey_path, "-signature", sig_path,
             data_path], capture_output=True, timeout=10)
        return result.returncode == 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-token-endpoint"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: tests read stats, not access logs

    # ---- plumbing

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def leave_in_flight(self):
        """Ends this token request's in-flight count before its answer goes out: a client that
        sends its next request as soon as it has an answer is then never counted twice, so
        max_in_flight measures overlap, not the gap between answer and thread exit."""
        if getattr(self, "in_flight_open", False):
            self.in_flight_open = False
            with STATE.lock:
                STATE.in_flight -= 1

    def send(self, status, body, headers=None, content_type="application/json; charset=utf-8"):
        self.leave_in_flight()
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

    def base_url(self):
        """http://host:port as the client addressed us (the Host header)."""
        return "http://" + (self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_port)

    def drop(self):
        """Close the connection without an answer (the client sees an empty reply)."""
        self.leave_in_flight()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routing

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        endpoint = ENDPOINT_PATH.match(path)
        if endpoint and endpoint.group(2) == "authorize":
            self.authorize(self.form(url.query.encode()))
        elif path == "/devicelogin":
            self.send(200, b"<html><body><p>Enter code</p></body></html>",
                      content_type="text/html; charset=utf-8")
        elif path == "/admin/stats":
            with STATE.lock:
                self.send(200, {
                    "total": STATE.total,
                    "per_account": dict(STATE.per_account),
                    "in_flight": STATE.in_flight,
                    "max_in_flight": STATE.max_in_flight,
                    "per_grant": dict(STATE.per_grant),
                    "authorize": STATE.authorize_count,
                    "devicecode": STATE.devicecode_count,
                })
        elif path == "/admin/config":
            with STATE.lock:
                self.send(200, dict(STATE.config))
        elif path == "/admin/device_polls":
            with STATE.lock:
                self.send(200, [dict(p) for p in STATE.device_polls])
        else:
            self.send(404, {"error": "not_found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        raw = self.read_body()
        endpoint = ENDPOINT_PATH.match(path)
        if endpoint and endpoint.group(2) == "token":
            self.token(self.form(raw), self.base_url() + path)
        elif endpoint and endpoint.group(2) == "devicecode":
            self.devicecode(self.form(raw))
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
            STATE.accounts[email] = {"password": p.get("password")}
            STATE.last_account = email
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
                "mailbox": record["mailbox"] if record else None,
            })
        if name == "reset_stats":
            STATE.reset_stats_locked()
            return (200, {})
        if name == "signin":
            return self.admin_signin_locked(p)
        if name == "authorize_outcome":
            if not isinstance(p.get("error", ""), str) or not isinstance(p.get("state", ""), str):
                return (400, {"error": "error and state must be strings"})
            if not p.get("error") and "state" not in p:
                return (400, {"error": "an outcome needs an error or a state"})
            STATE.authorize_outcome = dict(p)
            return (200, {})
        if name == "id_token_fault":
            if p.get("kind") not in ID_TOKEN_FAULTS:
                return (400, {"error": "kind must be one of %s" % (ID_TOKEN_FAULTS,)})
            STATE.id_token_fault = p["kind"]
            return (200, {})
        if name == "device_script":
            return self.admin_device_script_locked(p)
        if name == "apps":
            return self.admin_apps_locked(p)
        return (404, {"error": "unknown admin call"})

    def admin_signin_locked(self, p):
        email = p.get("email")
        if not isinstance(email, str):
            return (400, {"error": "email is required (\"\" restores the default)"})
        if not email:
            STATE.signin = None
            return (200, {"email": None, "mailbox": None, "name": None})
        STATE.signin = {
            "email": email,
            "mailbox": p.get("mailbox") or email,
            "name": p.get("name") or display_name(email),
        }
        return (200, dict(STATE.signin))

    def admin_device_script_locked(self, p):
        script = dict(DEFAULT_DEVICE_SCRIPT)
        script.update(p)
        unknown = set(script) - set(DEFAULT_DEVICE_SCRIPT)
        steps = script["steps"]
        if unknown:
            return (400, {"error": "unknown device script keys: %s" % sorted(unknown)})
        if not isinstance(steps, list) or not steps or any(s not in DEVICE_STEPS for s in steps):
            return (400, {"error": "steps must be a non-empty list of %s" % (DEVICE_STEPS,)})
        if any(f not in DEVICE_FIELDS for f in script["missing"]):
            return (400, {"error": "missing must name fields of %s" % (DEVICE_FIELDS,)})
        for key in ("interval", "expires_in"):
            if not isinstance(script[key], int) or script[key] < 0:
                return (400, {"error": "%s must be a non-negative integer" % key})
        STATE.device_script = script
        STATE.device_polls = []
        return (200, dict(script))

    def admin_apps_locked(self, p):
        client_id = p.get("client_id")
        mailbox = p.get("mailbox")
        secret = p.get("client_secret") or ""
        cert = p.get("certificate_pem") or ""
        if not isinstance(client_id, str) or not client_id:
            return (400, {"error": "client_id is required"})
        if not isinstance(mailbox, str) or not mailbox:
            return (400, {"error": "mailbox is required (one mailbox per app: see TESTING.md)"})
        if not secret and not cert:
            return (400, {"error": "client_secret or certificate_pem is required"})
        app = {"client_secret": secret, "mailbox": mailbox, "x5t": None, "pubkey_path": None}
        if cert:
            match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", cert,
                              re.S)
            try:
                der = ssl.PEM_cert_to_DER_cert(match.group(0)) if match else None
            except ValueError:
                der = None
            if der is None:
                return (400, {"error": "certificate_pem holds no PEM certificate"})
            extracted = subprocess.run(["openssl", "x509", "-pubkey", "-noout"],
                                       input=match.group(0).encode(), capture_output=True,
                                       timeout=10)
            if extracted.returncode != 0:
                return (400, {"error": "openssl x509: %s" % extracted.stderr.decode().strip()})
            path = os.path.join(STATE.workdir, "app-%s.pub.pem" %
                                hashlib.sha256(client_id.encode()).hexdigest()[:16])
            with open(path, "wb") as f:
                f.write(extracted.stdout)
            # The thumbprint Microsoft matches the assertion's x5t#S256 header against
            # (RFC 7515 s4.1.8: base64url of the SHA-256 of the DER certificate).
            app["x5t"] = b64url(hashlib.sha256(der).digest())
            app["pubkey_path"] = path
        STATE.apps[client_id] = app
        reply = {"client_id": client_id}
        if app["x5t"]:
            reply["x5t#S256"] = app["x5t"]
        return (200, reply)

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

    # ---- the authorize endpoint (a browser's GET)

    def authorize(self, query):
        with STATE.lock:
            STATE.authorize_count += 1
            status, headers, body = self.authorize_locked(query)
        if status == 302:
            self.send(302, b"", headers, content_type="text/html; charset=utf-8")
        else:
            self.send(status, body.encode(), headers, content_type="text/html; charset=utf-8")

    def authorize_locked(self, q):
        """(status, headers, html): a 302 to the redirect URI, or an error page."""
        redirect_uri = q.get("redirect_uri", "")
        client_id = q.get("client_id", "")
        if not loopback_redirect(redirect_uri):
            # Microsoft shows a page, never redirects, when the redirect URI is not registered:
            # the error must not go to a URI the app does not own (RFC 6749 s4.1.2.1).
            text = ("The redirect URI '%s' specified in the request does not match the redirect "
                    "URIs configured for the application '%s'. Make sure the redirect URI sent "
                    "in the request matches one added to your application in the Azure portal."
                    % (redirect_uri, client_id))
            page = "<html><body><h1>Sorry, but we're having trouble signing you in.</h1>" \
                   "<p>AADSTS50011: %s</p></body></html>" % text
            return (400, {}, page)
        state = q.get("state")
        user = STATE.signed_in_locked(q.get("login_hint", ""))
        values = {"client_id": client_id, "email": user["email"] if user else "",
                  "tenant_id": STATE.config["tenant_id"]}

        def fail(error, code, text=None):
            params = {"error": error}
            if error == "access_denied":
                params["error_subcode"] = "cancel"
            params["error_description"] = error_description(code,
                                                            text or aadsts_text(code, **values))
            if state is not None:
                params["state"] = state
            return (302, {"Location": with_query(redirect_uri, params)}, "")

        if not STATE.known_client_locked(client_id):
            return fail("unauthorized_client", 700016)
        if q.get("response_type") != "code":
            return fail("unsupported_response_type", 9002313,
                        "The response_type '%s' is not supported here; use code."
                        % q.get("response_type", ""))
        if not q.get("scope"):
            return fail("invalid_request", 900144,
                        "The request body must contain the following parameter: 'scope'.")
        challenge = q.get("code_challenge", "")
        if not challenge:
            return fail("invalid_request", 9002325)
        if q.get("code_challenge_method") != "S256":
            return fail("invalid_request", 9002313,
                        "code_challenge_method must be S256 (RFC 7636 s4.2); got '%s'."
                        % q.get("code_challenge_method", ""))
        if not PKCE_CHALLENGE.match(challenge):
            return fail("invalid_request", 501491)
        outcome, STATE.authorize_outcome = STATE.authorize_outcome, None
        if outcome and outcome.get("error"):
            error = outcome["error"]
            code = int(outcome.get("code") or AUTHORIZE_ERROR_CODES.get(error, 9002313))
            return fail(error, code, outcome.get("description"))
        if user is None:
            return fail("login_required", 50058)
        code = "M." + secrets.token_urlsafe(48)
        STATE.codes[code] = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "challenge": challenge,
            "scope": q["scope"],
            "user": user,
            "nonce": q.get("nonce", ""),
            "expires": time.time() + CODE_LIFETIME,
            "redeemed": False,
        }
        params = {"code": code}
        if outcome and "state" in outcome:
            params["state"] = outcome["state"]
        elif state is not None:
            params["state"] = state
        params["session_state"] = str(uuid.uuid4())
        return (302, {"Location": with_query(redirect_uri, params)}, "")

    # ---- the device authorization endpoint (RFC 8628 s3.1, s3.2)

    def devicecode(self, form):
        with STATE.lock:
            STATE.devicecode_count += 1
            status, body = self.devicecode_locked(form)
        self.send(status, body)

    def devicecode_locked(self, form):
        client_id = form.get("client_id", "")
        if not STATE.known_client_locked(client_id):
            return error_reply(400, "unauthorized_client", 700016, client_id=client_id)
        if not form.get("scope"):
            return error_reply(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: "
                               "'scope'.")
        script = STATE.device_script
        device_code = "DAQ." + secrets.token_urlsafe(48)
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(9))
        STATE.device_codes[device_code] = {
            "client_id": client_id,
            "scope": form["scope"],
            "steps": list(script["steps"]),
            "interval": script["interval"],
            "expires": time.time() + script["expires_in"],
            "done": None,
            "user": STATE.signed_in_locked(),
        }
        verification_uri = self.base_url() + "/devicelogin"
        body = {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": script["expires_in"],
            "interval": script["interval"],
            "message": "To sign in, use a web browser to open the page %s and enter the code %s "
            "to authenticate." % (verification_uri, user_code),
        }
        for field in script["missing"]:
            body.pop(field, None)
        return (200, body)

    # ---- the token endpoint

    def token(self, form, token_url):
        presented = form.get("refresh_token", "")
        grant = form.get("grant_type", "")
        poll = None
        with STATE.lock:
            email = STATE.request_account_locked(form)
            STATE.total += 1
            if email:
                STATE.per_account[email] = STATE.per_account.get(email, 0) + 1
            STATE.per_grant[grant] = STATE.per_grant.get(grant, 0) + 1
            if grant == DEVICE_GRANT:
                # When it arrived, so a test can measure the client's polling interval
                # (RFC 8628 s3.5). CLOCK_MONOTONIC, like std::chrono::steady_clock.
                poll = {"t": time.monotonic(), "result": None, "interval": None}
                STATE.device_polls.append(poll)
            STATE.in_flight += 1
            self.in_flight_open = True
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
                if poll is not None:
                    with STATE.lock:
                        poll["result"] = "fault"
                self.answer_fault(fault, form)
            else:
                self.answer_grant(form, presented, token_url, poll)
        finally:
            self.leave_in_flight()

    error_reply = staticmethod(error_reply)

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

    def answer_grant(self, form, presented, token_url, poll):
        with STATE.lock:
            status, body = self.grant_locked(form, presented, token_url, poll)
            if poll is not None:
                poll["result"] = body.get("error", "ok")
        self.send(status, body)

    def grant_locked(self, form, presented, token_url, poll):
        """The (status, body) answer to a token request; runs under the lock."""
        grant = form.get("grant_type")
        if grant not in GRANTS:
            return self.error_reply(400, "unsupported_grant_type", 70003)
        failed = self.client_auth_locked(form, token_url)
        if failed:
            return failed
        if grant == "refresh_token":
            return self.refresh_grant_locked(form, presented)
        if grant == "authorization_code":
            return self.code_grant_locked(form)
        if grant == DEVICE_GRANT:
            return self.device_grant_locked(form, poll)
        return self.client_credentials_locked(form)

    def client_auth_locked(self, form, token_url):
        """None when the client is known and authenticated, else the error answer."""
        client_id = form.get("client_id", "")
        app = STATE.apps.get(client_id)
        if app is None:
            if client_id != STATE.config["client_id"]:
                return self.error_reply(400, "unauthorized_client", 700016, client_id=client_id)
            secret = STATE.config["client_secret"]
            if secret:
                if "client_secret" not in form:
                    return self.error_reply(401, "invalid_client", 7000218)
                if form["client_secret"] != secret:
                    return self.error_reply(401, "invalid_client", 7000215, client_id=client_id)
            return None
        if "client_assertion" in form or "client_assertion_type" in form:
            return self.check_assertion_locked(app, client_id, form, token_url)
        if "client_secret" not in form:
            return self.error_reply(401, "invalid_client", 7000218)
        if not app["client_secret"] or not hmac.compare_digest(
                form["client_secret"].encode(), app["client_secret"].encode()):
            return self.error_reply(401, "invalid_client", 7000215, client_id=client_id)
        return None

    def check_assertion_locked(self, app, client_id, form, token_url):
        """RFC 7523 s3 checks of a client assertion, in the order Microsoft reports them."""
        def invalid(code, text=None):
            return self.error_reply(401, "invalid_client", code, text, client_id=client_id)

        if form.get("client_assertion_type") != JWT_BEARER:
            return self.error_reply(400, "invalid_request", 9002313,
                                    "client_assertion_type must be %s." % JWT_BEARER)
        parts = form.get("client_assertion", "").split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not three parts")
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError("not JSON objects")
        except ValueError:
            return invalid(50027)
        if header.get("alg") != "RS256":
            return invalid(700027, "Client assertion failed signature validation: alg must be "
                           "RS256, got '%s'." % header.get("alg"))
        if not app["pubkey_path"]:
            return invalid(700027, "Client assertion failed signature validation: no "
                           "certificate is registered for application '%s'." % client_id)
        if header.get("x5t#S256") != app["x5t"]:
            return invalid(700027, "Client assertion contains an invalid signature. [Reason - "
                           "The key was not found., Thumbprint of key used by client: '%s']"
                           % header.get("x5t#S256"))
        signed = (parts[0] + "." + parts[1]).encode("ascii")
        if not verify_rs256(app["pubkey_path"], signed, signature):
            return invalid(700027)
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return invalid(700021)
        if claims.get("aud") != token_url:
            return invalid(50013, "Assertion audience claim '%s' does not match the token "
                           "endpoint '%s'." % (claims.get("aud"), token_url))
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in (exp, nbf))
        if not numbers or exp <= now or nbf > now:
            return invalid(700024)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return invalid(50013, "Assertion has no jti claim.")
        if jti in STATE.assertion_ids:
            return invalid(50013, "Assertion jti '%s' was already used (replay)." % jti)
        STATE.assertion_ids.add(jti)
        return None

    def tokens_locked(self, client_id, user, scope, nonce=""):
        """A delegated grant's success: refresh token only with offline_access and id_token only
        with openid, as at Microsoft."""
        expires_in = STATE.config["expires_in"]
        body = {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": STATE.new_access_token_locked(user["mailbox"], scope, expires_in),
        }
        scopes = scope.split()
        if "offline_access" in scopes:
            body["refresh_token"] = STATE.new_refresh_token_locked(
                user["email"], mailbox=user["mailbox"], client_id=client_id)
        if "openid" in scopes:
            body["id_token"] = self.id_token_locked(client_id, user, nonce)
        return (200, body)

    def id_token_locked(self, client_id, user, nonce):
        """An OpenID Connect ID token (OIDC Core s2) with Microsoft's v2.0 claims, HS256-signed
        with a key of this process: the client does not verify it, because it came straight from
        the token endpoint over TLS (OIDC Core s3.1.3.7, item 6)."""
        fault, STATE.id_token_fault = STATE.id_token_fault, None
        if fault == "not_a_jwt":
            return "not_a_jwt"
        now = int(time.time())
        tid = STATE.config["tenant_id"]
        email = user["email"]
        claims = {
            "aud": client_id,
            "iss": "https://login.microsoftonline.com/%s/v2.0" % tid,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user["name"],
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, "oid:" + email.lower())),
            "preferred_username": email,
            "email": email,
            "sub": b64url(hashlib.sha256((client_id + "|" + email.lower()).encode()).digest()),
            "tid": tid,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        if fault == "no_identity":
            del claims["preferred_username"]
            del claims["email"]
        header = b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "test"}).encode())
        payload = b64url(b"{not json" if fault == "bad_payload" else json.dumps(claims).encode())
        signed = header + "." + payload
        signature = hmac.new(STATE.id_token_key, signed.encode(), hashlib.sha256).digest()
        return signed + "." + b64url(signature)

    def refresh_grant_locked(self, form, presented):
        config = dict(STATE.config)
        if not presented:
            return self.error_reply(400, "invalid_request", 900144)
        record = STATE.refresh_tokens.get(presented)
        if record is None:
            return self.error_reply(400, "invalid_grant", 70000)
        if record["revoked"]:
            return self.error_reply(400, "invalid_grant", 50173)
        if record["client_id"] and record["client_id"] != form.get("client_id"):
            return self.error_reply(400, "invalid_grant", 70000,
                                    "The provided value for the 'refresh_token' is not valid: "
                                    "it was issued to another client.")
        if config["refresh_openid"] == "refuse" and "openid" in form.get("scope", "").split():
            return self.error_reply(400, "invalid_grant", 70000,
                                    "The request was denied because one or more scopes "
                                    "requested are unauthorized or expired.")
        email = record["email"]
        rotation = config["rotation"]
        if rotation == "revoke_immediately":
            record["revoked"] = True
        elif rotation == "revoke_on_use" and record["predecessor"]:
            previous = STATE.refresh_tokens.get(record["predecessor"])
            if previous:
                previous["revoked"] = True
        new_refresh = STATE.new_refresh_token_locked(email, predecessor=presented,
                                                     mailbox=record["mailbox"],
                                                     client_id=record["client_id"])
        expires_in = config["expires_in"]
        scope = form.get("scope") or DEFAULT_SCOPE
        access = STATE.new_access_token_locked(record["mailbox"], scope, expires_in)
        body = {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access,
            "refresh_token": new_refresh,
        }
        if "openid" in scope.split():
            user = {"email": email, "mailbox": record["mailbox"], "name": display_name(email)}
            body["id_token"] = self.id_token_locked(form.get("client_id", ""), user, "")
        return (200, body)

    def code_grant_locked(self, form):
        """RFC 6749 s4.1.3 with PKCE (RFC 7636 s4.5, s4.6)."""
        code = form.get("code", "")
        if not code:
            return self.error_reply(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: "
                                    "'code'.")
        record = STATE.codes.get(code)
        if record is None:
            return self.error_reply(400, "invalid_grant", 70000,
                                    "The provided value for the 'code' parameter is not valid.")
        if record["redeemed"]:
            return self.error_reply(400, "invalid_grant", 54005)
        if time.time() > record["expires"]:
            return self.error_reply(400, "invalid_grant", 70008)
        if record["client_id"] != form.get("client_id"):
            return self.error_reply(400, "invalid_grant", 70000,
                                    "The provided value for the 'code' parameter is not valid: "
                                    "it was issued to another client.")
        if form.get("redirect_uri") != record["redirect_uri"]:
            return self.error_reply(400, "invalid_grant", 50011)
        verifier = form.get("code_verifier", "")
        if not verifier:
            return self.error_reply(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: "
                                    "'code_verifier'.")
        if not PKCE_VERIFIER.match(verifier):
            return self.error_reply(400, "invalid_request", 9002313,
                                    "code_verifier must be 43 to 128 characters of "
                                    "[A-Za-z0-9-._~] (RFC 7636 s4.1).")
        if b64url(hashlib.sha256(verifier.encode("ascii")).digest()) != record["challenge"]:
            return self.error_reply(400, "invalid_grant", 501481)
        record["redeemed"] = True
        return self.tokens_locked(record["client_id"], record["user"], record["scope"],
                                  record["nonce"])

    def device_grant_locked(self, form, poll):
        """RFC 8628 s3.4, s3.5: one scripted step per poll."""
        device_code = form.get("device_code", "")
        if not device_code:
            return self.error_reply(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: "
                                    "'device_code'.")
        record = STATE.device_codes.get(device_code)
        if record is None or record["client_id"] != form.get("client_id"):
            return self.error_reply(400, "bad_verification_code", 70018)
        if poll is not None:
            poll["interval"] = record["interval"]
        if record["done"] == "ok":
            return self.error_reply(400, "invalid_grant", 54005)
        if record["done"]:
            step = record["done"]
        elif time.time() >= record["expires"]:
            step = "expired"
        else:
            steps = record["steps"]
            step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step in DEVICE_TERMINAL:
            record["done"] = step
        if step == "slow_down":
            # RFC 8628 s3.5: the interval grows by 5 s for this and every later request.
            record["interval"] += 5
            if poll is not None:
                poll["interval"] = record["interval"]
        if step == "pending":
            return self.error_reply(400, "authorization_pending", 70016)
        if step == "slow_down":
            return self.error_reply(400, "slow_down", 0,
                                    "Polling too frequently: wait 5 more seconds between "
                                    "requests (RFC 8628 s3.5).")
        if step == "expired":
            return self.error_reply(400, "expired_token", 70020)
        if step == "declined":
            return self.error_reply(400, "authorization_declined", 70000,
                                    "The end user denied the authorization request.")
        if step == "access_denied":
            return self.error_reply(400, "access_denied", 65004)
        if step == "bad_code":
            return self.error_reply(400, "bad_verification_code", 70018)
        user = record["user"] or STATE.signed_in_locked()
        if user is None:
            return self.error_reply(400, "invalid_grant", 0,
                                    "test token endpoint: nobody signs in (call /admin/signin "
                                    "or /admin/accounts first).")
        record["user"] = user
        return self.tokens_locked(record["client_id"], user, record["scope"])

    def client_credentials_locked(self, form):
        """RFC 6749 s4.4; the client is already authenticated. No refresh token (s4.4.3)."""
        client_id = form.get("client_id", "")
        app = STATE.apps.get(client_id)
        if app is None:
            return self.error_reply(400, "unauthorized_client", 700016,
                                    "Application with identifier '%s' was not found in the "
                                    "directory 'Test' (register apps with /admin/apps)."
                                    % client_id)
        scope = form.get("scope", "")
        if not scope or any(not s.endswith("/.default") for s in scope.split()):
            return self.error_reply(400, "invalid_scope", 1002012)
        expires_in = STATE.config["expires_in"]
        return (200, {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": STATE.new_access_token_locked(app["mailbox"], scope, expires_in),
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

    # Next to the port file: the fixture's temporary folder, removed with it.
    STATE.workdir = tempfile.mkdtemp(prefix="token-endpoint.",
                                     dir=os.path.dirname(os.path.abspath(args.port_file)))
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
