"""Credentials out of every URL we show: SIE_BASE_URL may carry `user:token@` or `?key=...`.

`redact()` is the one function every message, log line and exception text that may contain a
server URL goes through; `RedactingFilter` applies it to log records of libraries (httpx logs
each request's full URL at INFO).
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# `scheme://userinfo@`: the userinfo (user, password or a token) goes whole.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@?#]+@")
# Every query value: `?key=`, `&token=`, `&api_key=` ... (over-masking a harmless value is the safe side).
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^\s=&#?]+=)[^\s&#'\"]+")


def redact(text: str, *secrets: str | None) -> str:
    """`text` with URL credentials and query values masked, and each of `secrets` (an API key) too."""
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _QUERY_VALUE.sub(rf"\g<key>{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Redacts a record's message in place, so every handler downstream sees the masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
