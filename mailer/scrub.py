"""Remove secrets from text before it goes into a mail.

Three layers, all applied by `scrub_text`:
1. exact known values the caller hands over (the request's OMERO session key, cookie values,
   a posted password), also in their URL-encoded forms;
2. `name=value` / `name: value` pairs whose name looks secret (password, token, session, ...);
3. secret-shaped strings whatever their name: JWTs, `Bearer ...`, UUIDs (OMERO session keys),
   long random-looking tokens (Django session ids, CSRF tokens).
Over-masking is accepted: a mail loses a detail, never leaks a credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote_plus

MASK = "[masked]"

# Secret values shorter than this are not searched for: they would mask ordinary text.
MIN_KNOWN_SECRET = 3

# A name is secret when it contains one of these (case-insensitive).
_SECRET_NAME = re.compile(
    r"pass|pwd|token|jwt|session|secret|key|csrf|auth|cookie|credential|signature|otp",
    re.IGNORECASE,
)
# ...unless it names an exception class (KeyError: 'x' keeps its detail).
_SECRET_WORD = re.compile(_SECRET_NAME.pattern)  # for lower-cased text: much faster
_EXCEPTION_NAME = re.compile(r"(error|exception|warning)\Z", re.IGNORECASE)

# What may follow a secret name: an optional closing quote, = or :, then the value.
_PAIR_TAIL = re.compile(
    r"""(?P<close>['"]?)(?P<sep>\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\\n]|\\.)*'?|"(?:[^"\\\n]|\\.)*"?"""
    r"""|(?:\[masked\]|[^\s&;,'"<>)}\]])+)"""
)
_NAME_REST = re.compile(r"[\w.-]*")
_NAME_CHARS = frozenset("_.-")
_SCHEME_TOKEN = re.compile(
    r"\b(Bearer|Basic|Digest|Token|Negotiate)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b")
# 32+ characters of letters and digits, with at least one of each: session ids, CSRF tokens.
_RANDOM_TOKEN = re.compile(r"\b(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b")
_HEX_TOKEN = re.compile(r"\b[0-9a-fA-F]{32,}\b")


def is_secret_name(name: str) -> bool:
    """True for a parameter, field or header name that holds a credential."""
    return bool(_SECRET_NAME.search(name)) and not _EXCEPTION_NAME.search(name)


def _known_forms(secrets: Iterable[str]) -> list[str]:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_KNOWN_SECRET:
            forms.update((secret, quote(secret, safe=""), quote_plus(secret, safe="")))
    # Longest first, so a value is not half-replaced by a shorter one it contains.
    return sorted(forms, key=len, reverse=True)


def _mask_pairs(text: str) -> str:
    # Found from the secret word outwards: a regex over whole names is slow on long text.
    out: list[str] = []
    done = 0
    lowered = text.lower()
    hits = (
        _SECRET_WORD.finditer(lowered) if len(lowered) == len(text) else _SECRET_NAME.finditer(text)
    )
    for hit in hits:
        if hit.start() < done:
            continue
        start = hit.start()
        while start > done and (text[start - 1].isalnum() or text[start - 1] in _NAME_CHARS):
            start -= 1
        name_end = _NAME_REST.match(text, hit.end())
        tail = _PAIR_TAIL.match(text, name_end.end() if name_end else hit.end())
        if tail is None:
            continue
        name, value = text[start : tail.start()], tail["value"]
        if is_secret_name(name):
            quote_char = value[0] if value[:1] in ("'", '"') else ""
            value = f"{quote_char}{MASK}{quote_char}"
        else:  # an exception name (KeyError: ...): keep it, but scrub what follows
            value = _mask_pairs(value)
        out += [text[done:start], name, tail["close"], tail["sep"], value]
        done = tail.end()
    out.append(text[done:])
    return "".join(out)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values, secret-named values and secret-shaped strings masked."""
    for form in _known_forms(secrets):
        text = text.replace(form, MASK)
    text = _SCHEME_TOKEN.sub(lambda m: f"{m[1]} {MASK}", text)
    text = _JWT.sub(MASK, text)
    text = _mask_pairs(text)
    text = _UUID.sub(MASK, text)
    text = _HEX_TOKEN.sub(MASK, text)
    return _RANDOM_TOKEN.sub(MASK, text)


def mask_query(query: str, secrets: Iterable[str] = ()) -> str:
    """A raw query string with the values of secret-named parameters masked, order kept."""
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and is_secret_name(unquote_plus(name)):
            part = f"{name}={MASK}"
        parts.append(part)
    return scrub_text("&".join(parts), secrets)


def one_line(text: str) -> str:
    """`text` made safe for a mail header: no line breaks, no control characters."""
    return "".join(c if c.isprintable() else " " for c in text)
