"""Retries of the steps that read over the network: a dropped connection, a busy server or a
store that timed out is tried again by Dagster (NETWORK_RETRY); an input or a setting that is
wrong fails at once, with its message, since no retry can fix it."""

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

NETWORK_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# what a retry cannot fix: a malformed, missing or unreadable input, a setting out of range
INPUT_ERRORS = (
    ValueError,
    LookupError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


F = TypeVar("F", bound=Callable)


def failing_at_once_on_bad_input(body: F) -> F:
    """An asset body whose input errors bypass the retry policy: the step fails on the first
    try, with the error as its cause."""

    @functools.wraps(body)
    def wrapped(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except INPUT_ERRORS as error:
            raise dg.Failure(
                description=f"{type(error).__name__}: {error}", allow_retries=False
            ) from error

    return wrapped  # type: ignore[return-value]
