"""Rows as Dagster table metadata: the UI shows a table inline, where a long Markdown table
hides behind "[Show Markdown]"; floats are rounded so a page reads 0.9424, not 0.94244882."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg


def _cell(value, digits: int):
    if isinstance(value, float):
        return round(value, digits)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _type(values: list) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int}:
        return "int"
    if kinds <= {int, float}:
        return "float"
    if kinds <= {bool}:
        return "bool"
    return "string"


def table(rows: Sequence[dict], digits: int = 4) -> dg.TableMetadataValue:
    """Rows of plain values (the first row's keys are the columns) as a table."""
    columns = list(rows[0]) if rows else []
    cells = [{c: _cell(r.get(c), digits) for c in columns} for r in rows]
    schema = dg.TableSchema(
        columns=[dg.TableColumn(c, _type([r[c] for r in cells])) for c in columns]
    )
    return dg.MetadataValue.table([dg.TableRecord(r) for r in cells], schema=schema)
