"""Paying a Tollgate API safely from Python: the retry and key patterns as a small module.

    from tollgate_client import Payments, random_idempotency_key

    payments = Payments("http://localhost:8000", api_key="test-api-key")
    response = payments.create({"amount": 123.0, "currency": "JPY", ...})

Every payment carries an ``Idempotency-Key`` chosen before the first attempt, so a retry can
never charge twice. Retried: transport errors (the request may or may not have arrived),
``429`` and ``409`` after their ``Retry-After``, and ``5xx`` after exponential backoff with full
jitter. Never retried: ``400``, ``401``, ``403``, ``404``, ``422`` (same key, different body).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import time
import uuid
from typing import Any, Callable, Mapping, Optional

import httpx

#: Statuses worth another attempt, as ``GET /api/v1/retry-config`` publishes them.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The longest ``Retry-After`` obeyed, in seconds (a server asking for an hour is capped).
MAX_RETRY_AFTER = 60.0


def random_idempotency_key() -> str:
    """A fresh key for a new operation: a random UUID (122 random bits)."""
    return str(uuid.uuid4())


def generate_idempotency_key(user_id: str, operation: str, params: Mapping[str, Any]) -> str:
    """A deterministic key: the same user, operation and parameters give the same key, so a
    client that crashed and restarts retries the same operation rather than a new one.

    The parameters are serialised as canonical JSON (sorted keys, no spaces), so nested
    values and their order do not change the key.
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    data = f"{user_id}:{operation}:{canonical}"
    return hashlib.sha256(data.encode()).hexdigest()


def retry_after_seconds(response: httpx.Response) -> Optional[float]:
    """The response's ``Retry-After`` in seconds (delta-seconds or an HTTP date), capped at
    :data:`MAX_RETRY_AFTER`; ``None`` when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(at.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def is_retryable(response: httpx.Response) -> bool:
    """Whether an answer is worth another attempt with the same key."""
    status = response.status_code
    in_progress = status == 409 and "Retry-After" in response.headers
    return status in RETRYABLE_STATUSES or in_progress


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Full jitter: uniform between zero and ``min(cap, base * 2**attempt)`` seconds, so
    clients that failed together do not retry together."""
    return random.uniform(0, min(cap, base * (2**attempt)))


def retry_with_backoff(
    func: Callable[[], httpx.Response],
    max_retries: int = 3,
    base: float = 0.5,
    cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Calls ``func`` (which sends the same request, with the same key, every time) until it
    gets a final answer, retrying at most ``max_retries`` times. Returns the last response;
    raises the last transport error if no attempt got an answer.

    ``func`` must not raise for status: the status decides here.
    """
    for attempt in range(max_retries + 1):
        last_attempt = attempt == max_retries
        try:
            response = func()
        except httpx.TransportError:
            if last_attempt:
                raise
            sleep(backoff_delay(attempt, base, cap))
            continue
        if last_attempt or not is_retryable(response):
            return response
        after = retry_after_seconds(response)
        sleep(after if after is not None else backoff_delay(attempt, base, cap))
    raise AssertionError("unreachable: the last attempt returns or raises")


class Payments:
    """A small client of ``POST /api/v1/payments`` that retries safely."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        client: Optional[httpx.Client] = None,
        max_retries: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=10.0)
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.max_retries = max_retries

    def create(
        self, payment: Mapping[str, Any], idempotency_key: Optional[str] = None
    ) -> httpx.Response:
        """Creates a payment; every attempt carries the same key (a random one unless given)."""
        key = idempotency_key or random_idempotency_key()
        headers = {**self.headers, "Idempotency-Key": key}
        url = f"{self.base_url}/api/v1/payments"
        return retry_with_backoff(
            lambda: self.client.post(url, json=payment, headers=headers),
            max_retries=self.max_retries,
        )
