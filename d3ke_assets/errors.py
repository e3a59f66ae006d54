"""Errors a user can act on.

Every error the platform raises for bad input is a `D3keError` whose message is
one line naming the file or value and the fix; the CLI prints it without a
traceback and Dagster shows it as the step failure message.
"""


class D3keError(Exception):
    """A problem with the user's input or environment, described in one line."""


class RawDataError(D3keError):
    """A raw file of one subject is missing or corrupt; fails that subject only."""
