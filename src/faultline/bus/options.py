"""Options in a bus URL's query string (`?name=value&...`), checked against what a bus knows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs


def url_options(url: str, query: str, known: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The query's options converted by `known[name]`; an unknown name or bad value is a
    ValueError naming the URL."""
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, strict_parsing=bool(query)).items():
        if name not in known:
            raise ValueError(f"unknown option {name!r} in {url!r}; known: {sorted(known)}")
        try:
            options[name] = known[name](values[-1])
        except ValueError as exc:
            raise ValueError(f"bad value for {name!r} in {url!r}: {values[-1]!r} ({exc})") from exc
    return options
