#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun after changing this).

Seeds are small, real-looking inputs in each target's input format (see the header comment of
fuzz/<target>.cpp): Microsoft token endpoint answers (success and the AADSTS errors of
docs TESTING.md), device-flow answers, IMAP greetings, CAPABILITY and login exchanges with
literals, the example configs and the `init` default, SASL PLAIN strings.
"""
import base64
import json
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def write(target, seeds):
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        if not old.name.startswith("regression-"):  # crash inputs found by fuzzing stay
            old.unlink()
    for i, (name, data) in enumerate(seeds):
        if isinstance(data, str):
            data = data.encode()
        (d / f"{i:02d}-{name}").write_bytes(data)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# ---- token_fuzzer: byte 0 status index (0 = 200, 3 = 400, 9 = 429, 10 = 500), byte 1 Retry-After
STATUS = {200: 0, 400: 3, 401: 5, 408: 8, 429: 9, 500: 10, 503: 12}
AT = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFCQyJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlLmNvbSJ9.c2ln"
id_payload = {
    "aud": "00000000-0000-0000-0000-000000000001", "iss":
    "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
    "iat": 1732838400, "nbf": 1732838400, "exp": 1732842300, "name": "Alice Example",
    "preferred_username": "alice@contoso.example", "email": "alice@contoso.example",
    "oid": "00000000-0000-0000-66f3-3332eca7ea81", "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
    "ver": "2.0",
}
ID_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + b64url(json.dumps(id_payload).encode()) + ".c2ln"


def token(status, body, retry_after=b""):
    cut = len(retry_after) + 1 if retry_after else 0
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return bytes([STATUS[status], cut]) + retry_after + body


def ms_error(error, code, desc):
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {desc}\r\nTrace ID: 0b6f1a2c-1d2e-4c3b-9a8f-7e6d5c4b3a00"
                             "\r\nCorrelation ID: 5c0e1d2f-3a4b-4c5d-8e9f-a0b1c2d3e4f5"
                             "\r\nTimestamp: 2024-11-29 01:00:00Z",
        "error_codes": [code], "timestamp": "2024-11-29 01:00:00Z",
        "trace_id": "0b6f1a2c-1d2e-4c3b-9a8f-7e6d5c4b3a00",
        "correlation_id": "5c0e1d2f-3a4b-4c5d-8e9f-a0b1c2d3e4f5",
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


token_seeds = [
    ("refresh-ok", token(200, {"token_type": "Bearer", "scope":
                               "https://outlook.office.com/IMAP.AccessAsUser.All", "expires_in": 3599,
                               "ext_expires_in": 3599, "access_token": AT,
                               "refresh_token": "0.AXoA-rotated-refresh.token"})),
    ("code-ok-id-token", token(200, {"token_type": "Bearer", "scope": "openid profile email",
                                     "expires_in": "3599", "access_token": AT,
                                     "refresh_token": "0.AXoA-refresh", "id_token": ID_TOKEN})),
    ("app-only-ok", token(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                "access_token": AT})),
    ("invalid-grant-70008", token(400, ms_error("invalid_grant", 70008,
                                                "The provided authorization code or refresh token has "
                                                "expired due to inactivity."))),
    ("invalid-grant-700082", token(400, ms_error("invalid_grant", 700082,
                                                 "The refresh token has expired due to inactivity."))),
    ("revoked-50173", token(400, ms_error("invalid_grant", 50173, "The provided grant has expired "
                                          "due to it being revoked."))),
    ("unknown-client-700016", token(400, ms_error("unauthorized_client", 700016,
                                                  "Application with identifier 'x' was not found."))),
    ("bad-secret-7000215", token(401, ms_error("invalid_client", 7000215,
                                               "Invalid client secret provided."))),
    ("pending", token(400, ms_error("authorization_pending", 70016,
                                    "OAuth 2.0 device flow error. Authorization is pending."))),
    ("slow-down", token(400, {"error": "slow_down"})),
    ("declined", token(400, {"error": "authorization_declined",
                             "error_description": "AADSTS70000: the user declined"})),
    ("expired-token", token(400, ms_error("expired_token", 70019, "Verification code expired."))),
    ("throttled", token(429, "", b"30")),
    ("server-error", token(500, "<html><body>Internal Server Error</body></html>")),
    ("unavailable", token(503, {"error": "temporarily_unavailable"}, b"120")),
    ("ok-but-error", token(200, {"error": "invalid_request", "access_token": AT})),
    ("truncated", token(200, '{"token_type":"Bearer","expires_in":3599,"access_tok')),
    ("device-ok", token(200, {"user_code": "ABCD-EFGH", "device_code": "DAQABAAEAAAD--device-code",
                              "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900,
                              "interval": 5, "message": "To sign in, use a web browser to open the page "
                              "https://microsoft.com/devicelogin and enter the code ABCD-EFGH to "
                              "authenticate."})),
    ("device-google", token(200, {"device_code": "4/4-GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8",
                                  "user_code": "GQVQ-JKEC", "verification_url":
                                  "https://www.google.com/device", "expires_in": 1800, "interval": 5})),
    ("id-token-only", token(200, ID_TOKEN)),
]
write("token_fuzzer", token_seeds)

# ---- upstream_response_fuzzer: byte 0 options, byte 1 read-size seed, then the server's bytes
def up(text, opts=0, seed=7):
    return bytes([opts, seed]) + text.encode()


upstream_seeds = [
    ("dovecot-sasl-ir", up("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
                           "AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.\r\n"
                           "p1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
                           "THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
                           "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SPECIAL-USE MOVE] Logged in\r\n"
                           "* LIST (\\Noselect) \"/\" \"\"\r\np2 OK List completed (0.001 + 0.000 secs).\r\n")),
    ("exchange", up("* OK The Microsoft Exchange IMAP4 service is ready. [TQBXADQAUABSADEAMgBDAEEAMAAwADEA]\r\n"
                    "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT "
                    "CHILDREN IDLE NAMESPACE LITERAL+\r\np1 OK CAPABILITY completed.\r\n"
                    "p2 NO AUTHENTICATE failed.\r\n")),
    ("exchange-not-connected", up("* OK The Microsoft Exchange IMAP4 service is ready.\r\n"
                                  "p1 OK AUTHENTICATE completed.\r\n"
                                  "p2 BAD User is authenticated but not connected.\r\n")),
    ("gmail-challenge", up("* OK Gimap ready for requests from 192.0.2.1 a1mb123456\r\n"
                           "+ eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n"
                           "p2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n")),
    ("dovecot-unavailable", up("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n+ \r\n"
                               "p1 NO [UNAVAILABLE] Temporary authentication failure.\r\n")),
    ("bye", up("* BYE Too many connections\r\n")),
    ("session-invalidated", up("* OK ready\r\n* BYE Session invalidated - AccessTokenExpired\r\n")),
    ("literals", up("* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n* ID (\"name\" {8}\r\nDovecot\" "
                    "\"x\" {3+}\r\n\r\n!)\r\np1 OK {0}\r\n done\r\n* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\n")),
    ("literal-small-limits", up("* OK hi {60}\r\n" + "x" * 60 + "\r\n* OK\r\n", opts=1, seed=3)),
    ("lowercase", up("* ok [capability imap4rev1 auth=xoauth2 sasl-ir] hello\r\np1 ok [Capability IMAP4rev1 "
                     "IDLE] done\r\n")),
    ("malformed", up("*\r\n\r\np1\r\n+\r\n* OK [unterminated code\r\np1 OK {99999999999999999999}\r\n", seed=200)),
]
write("upstream_response_fuzzer", upstream_seeds)

# ---- config_fuzzer: TOML text
config_seeds = [(p.name, p.read_bytes()) for p in sorted((ROOT / "dist/examples").glob("*.toml"))]
src = (ROOT / "app/config.cpp").read_text()
m = re.search(r'std::string default_config_text\(\) \{\s*return R"\((.*?)\)";', src, re.S)
if m:
    config_seeds.append(("default_config_text.toml", m.group(1)))
config_seeds += [
    ("minimal.toml", '[oauth]\nclient_id = "00000000-0000-0000-0000-000000000001"\n'),
    ("providers.toml", '[oauth]\nclient_id = "a"\n[providers.gmail]\nclient_id = "b.apps.googleusercontent.com"\n'
                       'client_secret = "s"\n[hide_capabilities]\n"*" = ["COMPRESS=DEFLATE"]\n'
                       '"bob@contoso.example" = ["NOTIFY"]\n'),
    ("bad-duration.toml", '[redis]\nurl = "redis://127.0.0.1:6379/0"\ntimeout = "fast"\n'),
    ("listen-ipv6.toml", '[server]\nlisten_tls = "[::1]:1993"\nlisten_starttls = "127.0.0.1:1143"\n'
                         'max_connections = 100\npreauth_timeout = "30s"\n[log]\nlevel = "debug"\nformat = "json"\n'),
    ("postgres.toml", '[storage]\ndatabase = "postgresql://iop@127.0.0.1:5432/iop?sslmode=disable"\n'
                      'password_file = "secrets/pg-password"\nconnection_log = "data/log.db"\n'),
]
write("config_fuzzer", config_seeds)

# ---- sasl_fuzzer: the same bytes as a PLAIN message, base64 text and XOAUTH2 user NUL token
def b64(s):
    return base64.b64encode(s.encode()).decode()


sasl_seeds = [
    ("plain-msg", "\0alice@contoso.example\0correct horse battery staple"),
    ("plain-authzid", "alice@contoso.example\0ALICE@contoso.example\0pw"),
    ("plain-mismatch", "bob@contoso.example\0alice@contoso.example\0pw"),
    ("plain-b64", b64("\0alice@contoso.example\0secret")),
    ("plain-b64-authzid", b64("alice\0alice\0pw")),
    ("plain-b64-three-nuls", b64("\0a\0b\0c")),
    ("b64-noncanonical", "AGFsaWNlAHNlY3JldB=="),
    ("b64url", b64url(b"\xfb\xff\xfe hello")),
    ("xoauth2-user-token", "alice@contoso.example\0" + AT),
    ("xoauth2-ctrl", "alice\x01\0token"),
    ("empty-fields", "\0\0"),
]
write("sasl_fuzzer", sasl_seeds)
# ---- preauth_fuzzer: byte 0 options (1 TLS, 2 plaintext allowed, 4 STARTTLS, 8 small limits),
# byte 1 read-size seed, then the client's bytes
def pre(text, opts=1, seed=5):
    return bytes([opts, seed]) + text.encode()


preauth_seeds = [
    ("login", pre("a1 CAPABILITY\r\na2 LOGIN alice@contoso.example \"pass word\"\r\na3 NOOP\r\n")),
    ("login-literals", pre("a1 LOGIN {21}\r\nalice@contoso.example {8+}\r\nsecret\"\\\r\n")),
    ("auth-plain-ir", pre("a1 AUTHENTICATE PLAIN " + b64("\0alice@contoso.example\0secret") + "\r\n")),
    ("auth-plain-cont", pre("a1 AUTHENTICATE PLAIN\r\n" + b64("alice\0alice\0pw") + "\r\n")),
    ("auth-cancel", pre("a1 AUTHENTICATE PLAIN\r\n*\r\na2 LOGOUT\r\n")),
    ("starttls", pre("a1 STARTTLS\r\na2 LOGIN alice pw\r\n", opts=4)),
    ("plaintext", pre("a1 ID (\"name\" \"Thunderbird\" \"version\" NIL)\r\na2 LOGIN a b\r\n", opts=2)),
    ("small-limits", pre("a1 LOGIN {40}\r\n" + "x" * 40 + " y\r\n", opts=9)),
    ("junk", pre("\r\n* LOGIN\r\na1 SELECT INBOX\r\na2 LOGIN\r\n((((\r\n")),
]
write("preauth_fuzzer", preauth_seeds)
# ---- upstream_login_fuzzer: byte 0 options (1 password account, 2 probe, 4 small limits, 8 with 2:
# the probe against Exchange only), byte 1
# read-size seed, then the server's bytes (the machine's commands are tagged p1, p2, ...)
def login(text, opts=2, seed=9):
    return bytes([opts, seed]) + text.encode()


DOVECOT_GREETING = ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
                    "AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.\r\n")
DOVECOT_OK = ("OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE SORT UNSELECT CHILDREN NAMESPACE "
              "UIDPLUS LIST-EXTENDED CONDSTORE QRESYNC ESEARCH SPECIAL-USE MOVE] Logged in\r\n")
EXCHANGE_GREETING = "* OK The Microsoft Exchange IMAP4 service is ready. [TQBXADQAUABSADEAMgBDAEEAMAAwADEA]\r\n"
EXCHANGE_CAPS = ("* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT "
                 "CHILDREN IDLE NAMESPACE LITERAL+\r\np1 OK CAPABILITY completed.\r\n")
login_seeds = [
    ("dovecot-sasl-ir", login(DOVECOT_GREETING + "p1 " + DOVECOT_OK +
                              "* LIST (\\Noselect) \".\" \"\"\r\np2 OK List completed (0.001 + 0.000 secs).\r\n")),
    ("dovecot-challenge", login(DOVECOT_GREETING + "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"
                                "p1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")),
    ("dovecot-unavailable", login(DOVECOT_GREETING + "p1 NO [UNAVAILABLE] Temporary authentication failure.\r\n")),
    ("exchange-not-connected", login(EXCHANGE_GREETING + EXCHANGE_CAPS + "p2 OK AUTHENTICATE completed.\r\n"
                                     "p3 BAD User is authenticated but not connected.\r\n"
                                     "p4 BAD User is authenticated but not connected.\r\n")),
    ("no-sasl-ir-continuation", login(EXCHANGE_GREETING + "* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\np1 OK done\r\n"
                                      "+ \r\np2 OK AUTHENTICATE completed.\r\n* CAPABILITY IMAP4rev1 IDLE\r\n"
                                      "p3 OK done\r\np4 OK LIST completed.\r\n* 1 EXISTS\r\n")),
    ("gmail-challenge", login("* OK Gimap ready for requests from 192.0.2.1 a1mb123456\r\n"
                              "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
                              "XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER\r\np1 OK Thats all she wrote!\r\n"
                              "+ eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n"
                              "p2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n")),
    ("bye-greeting", login("* BYE [UNAVAILABLE] Too many connections\r\n")),
    ("bye-during-auth", login(DOVECOT_GREETING + "* BYE Connection is closed. 13\r\n")),
    ("literals", login(DOVECOT_GREETING + "p1 " + DOVECOT_OK + "* LIST () \"/\" {14}\r\np2 NO forged\r\n\r\n"
                       "* LIST () \"/\" {0}\r\n\r\n* LIST () \"/\" {5+}\r\nINBOX\r\np2 OK done\r\n* 2 EXISTS\r\n")),
    ("password-login", login(DOVECOT_GREETING + "p1 " + DOVECOT_OK + "p2 OK done\r\n", opts=3)),
    ("password-logindisabled", login("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n", opts=1)),
    ("no-probe-pending", login(DOVECOT_GREETING + "p1 " + DOVECOT_OK + "* 1 RECENT\r\n", opts=0)),
    ("small-limits", login("* OK [CAPABILITY IMAP4rev1 SASL-IR] hi\r\n" +
                           "* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n" * 12, opts=6, seed=3)),
    ("malformed", login("* OK hi\r\n\r\n+ go\r\np1\r\n* PREAUTH\r\n", seed=200)),
    ("auto-probe-exchange", login(EXCHANGE_GREETING + EXCHANGE_CAPS + "p2 OK AUTHENTICATE completed.\r\n"
                                  "p3 BAD User is authenticated but not connected.\r\n"
                                  "p4 BAD User is authenticated but not connected.\r\n", opts=10)),
    ("auto-probe-dovecot", login(DOVECOT_GREETING + "p1 " + DOVECOT_OK + "* 1 RECENT\r\n", opts=10)),
]
write("upstream_login_fuzzer", login_seeds)
print("seeds written")
