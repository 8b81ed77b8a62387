"""The one way a resource is filled from :class:`SpamSettings`.

Every knob lives in the settings object; a resource only carries a named slice of it into
Dagster, so the effective values are visible (and overridable per run) in the UI. A field
``f`` is the setting ``PREFIX + f``, unless ``SOURCES`` names another setting or a derived
value (a function of the settings, e.g. a path under ``SPAM_HOME``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self, get_args

import dagster as dg

from spam_serving.settings import SpamSettings, get_settings

Source = str | Callable[[SpamSettings], object]


def _plain(value: object) -> object:
    """Dagster config holds str, not Path; lists, not tuples."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_path(setting: str) -> bool:
    annotation = SpamSettings.model_fields[setting].annotation
    return annotation is Path or Path in get_args(annotation)


class SettingsSlice(dg.ConfigurableResource):
    """A resource that is a named slice of :class:`SpamSettings` (see the module docstring).
    ``from_settings`` fills it; ``settings()`` hands the effective values back to the plain-
    Python side, so the field list is written once, in the class."""

    PREFIX: ClassVar[str] = ""
    SOURCES: ClassVar[dict[str, Source]] = {}

    @classmethod
    def _source(cls, field: str) -> Source:
        return cls.SOURCES.get(field, cls.PREFIX + field)

    @classmethod
    def from_settings(cls, s: SpamSettings | None = None) -> Self:
        s = s or get_settings()

        def value(field: str) -> object:
            src = cls._source(field)
            return _plain(src(s) if callable(src) else getattr(s, src))

        return cls(**{f: value(f) for f in cls.model_fields})

    def settings(self) -> SpamSettings:
        """The current settings with this resource's (possibly run-configured) values; a
        field that is derived rather than a setting is not written back."""
        update = {}
        for field in type(self).model_fields:
            name = self._source(field)
            if callable(name) or name not in SpamSettings.model_fields:
                continue
            value = getattr(self, field)
            update[name] = Path(value) if value is not None and _is_path(name) else value
        return get_settings().model_copy(update=update)
