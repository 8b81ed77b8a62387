"""``parsed_messages`` rows back to the objects the featurizer reads."""

from __future__ import annotations

import pandas as pd

from spam_serving.parsing import ParsedMessage, from_record


def messages_of(df: pd.DataFrame) -> list[ParsedMessage]:
    """Parquet rows -> ParsedMessage: the exact objects the service builds from a request."""
    return [from_record(r) for r in df.to_dict("records")]
