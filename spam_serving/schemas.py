"""Request bodies of the service, validated by pydantic (errors become 400 with the reason).

One message is either the raw RFC822 text (``raw``, or ``raw_base64`` for 8-bit mail, which is
what a ``Content-Type: message/rfc822`` body is turned into) or structured fields. Both go
through the same parser as training, so a JSON request and the equivalent raw mail get the
same features.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spam_serving.parsing import ParsedMessage, message_from_fields, parse_message

MAX_FIELD_CHARS = 5_000_000


class MessageIn(BaseModel):
    """One email: raw text, base64 raw bytes, or subject/body/sender/headers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    raw: str | None = Field(None, max_length=MAX_FIELD_CHARS, description="RFC822 text")
    raw_base64: str | None = Field(None, max_length=MAX_FIELD_CHARS * 2)
    subject: str | None = Field(None, max_length=10_000)
    body: str | None = Field(None, max_length=MAX_FIELD_CHARS)
    sender: str | None = Field(None, max_length=1_000)
    headers: dict[str, str] | None = Field(None, max_length=500)
    explain: bool = Field(True, description="Include the top contributing features.")

    @model_validator(mode="after")
    def _one_form(self) -> MessageIn:
        raw_forms = (self.raw is not None) + (self.raw_base64 is not None)
        fields = any(v is not None for v in (self.subject, self.body, self.sender, self.headers))
        if raw_forms > 1 or (raw_forms and fields):
            raise ValueError("give either raw, raw_base64, or subject/body/sender/headers")
        if not raw_forms and not fields:
            raise ValueError("empty message: give raw, raw_base64, or subject/body/sender")
        if self.raw is not None and not self.raw.strip():
            raise ValueError("raw is empty")
        if self.raw_base64 is not None:
            try:
                data = base64.b64decode(self.raw_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"raw_base64 is not valid base64: {exc}") from None
            if not data.strip():
                raise ValueError("raw_base64 decodes to an empty message")
        return self

    def parse(self) -> ParsedMessage:
        """The message as the featurizer sees it (never raises; problems go to parse_error)."""
        if self.raw is not None:
            return parse_message(self.raw.encode("utf-8", "surrogateescape"))
        if self.raw_base64 is not None:
            return parse_message(base64.b64decode(self.raw_base64))
        return message_from_fields(
            subject=self.subject or "",
            body=self.body or "",
            sender=self.sender or "",
            headers=self.headers,
        )


class BatchIn(BaseModel):
    """Up to ``predict_batch_limit`` messages (checked in the handler: 422 with the limit)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: list[MessageIn] = Field(min_length=1)


class FeedbackIn(BaseModel):
    """The true label of an earlier prediction (its ``prediction_id``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prediction_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    label: Literal["spam", "ham"]
    comment: str | None = Field(None, max_length=2_000)
