"""One redaction for every message a user or a log can see: URI passwords, hub tokens, Authorization headers.

Patterns catch the usual shapes (`scheme://user:PASSWORD@host`, `hf_...`,
`Authorization: Bearer ...`, libpq's `password=...`). A password can hold any
printable character, so the shape alone is not enough (a space or a quote ends
the pattern): every secret hftoolkit reads from a URI or a token is also
remembered, raw and %-decoded, and replaced wherever it appears, e.g. inside a
driver's exception text.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
# userinfo runs to the last '@' of the token, so a raw '@', '/' or ':' in the password is covered
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s'\"]*@")
_HUB_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|token)\s+)?)[^\s'\",}]+")
_DSN_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^\s'\",;&]+)")
_MIN_SECRET = 4  # shorter ones would mask ordinary words; the patterns above still catch them in place

_secrets: set[str] = set()


def remember_secret(secret: str | None) -> None:
    """Mask this value wherever it appears from now on (raw, %-decoded and %-encoded forms)."""
    if not secret:
        return
    for form in {secret, unquote(secret), quote(secret, safe="")}:
        if len(form) >= _MIN_SECRET:
            _secrets.add(form)


def uri_password(uri: str) -> str | None:
    """The password part of `scheme://user:password@host...` as written (up to the last '@' before the host),
    or None."""
    head, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    if "/" in userinfo.split(":", 1)[0]:
        return None  # an '@' in the path, not a login
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def remember_uri(uri: str | None) -> None:
    """Remember a URI's password (database, Redis, any scheme://user:password@host)."""
    if isinstance(uri, str):
        remember_secret(uri_password(uri))


def with_encoded_password(uri: str) -> str:
    """The URI with its password %-encoded, so a raw '@', '/', ':' or '#' in it cannot move the host: a URI
    parser would otherwise take part of the password for the host or port and print it in its error."""
    password = uri_password(uri)
    if password is None:
        return uri
    head, rest = uri.split("://", 1)
    user = rest.rsplit("@", 1)[0].split(":", 1)[0]
    return f"{head}://{user}:{quote(unquote(password), safe='')}@{rest.rsplit('@', 1)[1]}"


def redact(text) -> str:
    """`text` with every known secret and every secret-shaped part masked."""
    text = str(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _HUB_TOKEN.sub("hf_" + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    return _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
