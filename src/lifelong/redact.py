"""Secrets never reach an output: redact them from URLs and from any text.

Two kinds of secret pass through lifelong: API keys (``LIFELONG_API_KEY``,
``OPENAI_API_KEY``) and passwords inside URLs (``postgresql://u:pw@host/db``,
``…?password=pw``, ``openai:http://u:pw@host/v1#m``). Whatever echoes text it
did not write -- an error body from a server, a driver's message, a URL the
user gave -- goes through :func:`redact` before it is shown; URLs go through
:func:`redact_url`.
"""

from __future__ import annotations

import base64
import os
import re
import threading

KEY_VARS = ("LIFELONG_API_KEY", "OPENAI_API_KEY")
MASK = "***"
# Query keys whose values are secrets (libpq's password and sslpassword, tokens, keys).
_SECRET_KEY = r"(?:[\w.-]*(?:pass(?:word)?|secret|token|api[_-]?key)[\w.-]*|auth)"
_QUERY_SECRET = re.compile(rf"(?i)([?&;]{_SECRET_KEY}=)[^&#\s]*")
# scheme://user:password@host -- the password may itself hold '@', ':' or '/',
# so the userinfo runs to the LAST '@' before the query.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#@\s]*?):([^?#\s]*)@(?=[^@?#\s]*(?:[/?#\s]|$))")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{4,}")
# A header echoed back: "Authorization: Basic dXNlcjpwdw==", {"authorization": "..."}
_AUTH_HEADER = re.compile(r"""(?i)\b((?:proxy-)?authorization|x-api-key|api-key)(["']?\s*[:=]\s*["']?)"""
                          r"""(?:(?:bearer|basic|token|digest)\s+)?[^\s"',}]+""")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")

_known: set[str] = set()
_lock = threading.Lock()


def remember(secret: str | None) -> None:
    """Add a secret to the ones :func:`redact` removes (short strings are ignored:
    masking every 'a' would make messages unreadable and protect nothing)."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)


def secrets() -> list[str]:
    """The secrets known now: remembered ones and the API keys in the environment."""
    with _lock:
        known = set(_known)
    known.update(v for v in (os.environ.get(k) for k in KEY_VARS) if v and len(v) >= 4)
    return sorted(known, key=len, reverse=True)  # longest first: no partial leftovers


def redact_url(url: str) -> str:
    """``url`` without its password: in the userinfo and in query parameters."""
    for password in _passwords(url):
        remember(password)
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", url)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, out)


def redact(text: str) -> str:
    """``text`` with every known secret, URL password and bearer token masked."""
    if not text:
        return text
    for secret in secrets():
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _KEY_LIKE.sub(MASK, text)


def _passwords(url: str) -> list[str]:
    found = [m.group(3) for m in _USERINFO.finditer(url)]
    # An HTTP client sends the userinfo as "Basic base64(user:password)".
    found += [base64.b64encode(f"{m.group(2)}:{m.group(3)}".encode()).decode()
              for m in _USERINFO.finditer(url) if m.group(3)]
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    return [p for p in found if p]
