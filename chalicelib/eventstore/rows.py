"""Rows read into dataclasses: the select list names the fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import psycopg


def dataclass_row(cls: type, *, leading: tuple[str, ...] = ()) -> Callable[[psycopg.Cursor], Callable]:
    """A row factory for a select list named like the dataclass's fields
    (after the `leading` columns, which come back in front of the object).
    The names are checked once per statement and each row is then built
    positionally, which is cheaper than class_row's dict per row."""
    expected = [*leading, *(field.name for field in dataclasses.fields(cls))]
    skip = len(leading)

    def factory(cursor: psycopg.Cursor) -> Callable[[Sequence[Any]], Any]:
        names = [column.name for column in cursor.description or []]
        if names != expected:
            raise TypeError(f"{cls.__name__} rows need the columns {expected}, not {names}")
        if skip:
            return lambda values: (*values[:skip], cls(*values[skip:]))
        return lambda values: cls(*values)

    return factory
