"""Small helpers shared by the asset files."""

from __future__ import annotations

import contextlib

import dagster as dg

from d3ke_assets.errors import D3keError


@contextlib.contextmanager
def user_errors_as_failures():
    """A D3keError becomes a Dagster Failure carrying its one-line message."""
    try:
        yield
    except D3keError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
