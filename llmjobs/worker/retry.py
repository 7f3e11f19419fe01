"""Error classes and the retry schedule for failures that are not the input's fault."""

from __future__ import annotations

import random

from sqlalchemy.exc import DBAPIError, OperationalError

from llmjobs.errors import BrokerError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    ConnectionError,
    TimeoutError,
    BrokerError,
)


def is_transient(error: BaseException) -> bool:
    """True for failures that a later attempt can fix: lost connections, locks, timeouts."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT_ERRORS)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)].

    Jitter spreads the retries of many jobs that failed together, so they do not all
    hit the recovering database or broker at the same moment.
    """
    ceiling = min(max_s, base_s * (2 ** max(0, attempt)))
    return (rng or random).uniform(0.5 * ceiling, ceiling)
