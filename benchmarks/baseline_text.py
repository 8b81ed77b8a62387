"""Text extraction of the baseline: the stdlib parser as tutorials use it."""

from __future__ import annotations

import email
from email import policy


def message_text(raw: str) -> str:
    """Subject + text parts, the way tutorials do it with the stdlib parser."""
    msg = email.message_from_string(raw, policy=policy.default)
    parts = [str(msg.get("subject", ""))]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(part.get_content())
            except (LookupError, UnicodeError, AssertionError):
                parts.append(part.get_payload(decode=True).decode("latin-1", "replace"))
    return "\n".join(parts)
