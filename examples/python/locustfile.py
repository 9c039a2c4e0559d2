"""A locust load test of the payments API with the client pattern of ``tollgate_client``:
new payments (amounts as Python floats, as ``json.dumps`` spells them), retries with the same
key after ``429``/``409``/``5xx``, replays of finished payments, and a reused key with a
different body (which must be refused with ``422``).

    locust -f examples/python/locustfile.py --host=http://localhost:8000

Settings (environment): ``TOLLGATE_API_KEY`` (default ``test-api-key``), and
``TOLLGATE_LOCUST_KEYS``, a file that receives the keys of the payments created (one per
line), to reconcile with the database and the processor after the run.

A request is a failure when its final answer is not the one the API promises: a retried
attempt is not a failure, a ``422`` for a conflicting body is the expected answer.
"""

from __future__ import annotations

import os
import random
import threading
import time

from locust import HttpUser, between, events, task

from tollgate_client import (
    backoff_delay,
    generate_idempotency_key,
    is_retryable,
    random_idempotency_key,
    retry_after_seconds,
)

API_KEY = os.environ.get("TOLLGATE_API_KEY", "test-api-key")
PATH = "/api/v1/payments"
MAX_RETRIES = 8

created_keys: set[str] = set()
created_lock = threading.Lock()


def new_payment() -> dict:
    """A payment whose amount is a float: 123.0 yen, or dollars with up to two decimals."""
    if random.random() < 0.3:
        amount, currency = float(random.randint(1, 50_000)), "JPY"
    else:
        amount, currency = round(random.uniform(0.5, 500), 2), "USD"
    return {
        "amount": amount,
        "currency": currency,
        "description": "locust",
        "payment_method": "card",
        "metadata": {"order_id": random_idempotency_key()},
    }


class PaymentsUser(HttpUser):
    wait_time = between(0.01, 0.1)

    def on_start(self) -> None:
        self.finished: list[tuple[str, dict]] = []

    def pay(self, key: str, payment: dict, name: str, expect: int) -> None:
        """Sends until a final answer, the same key every time; the final answer must be
        ``expect``. Retried attempts are reported under their own name, as successes."""
        headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key}
        for attempt in range(MAX_RETRIES + 1):
            last = attempt == MAX_RETRIES
            with self.client.post(
                PATH, json=payment, headers=headers, name=name, catch_response=True
            ) as response:
                if response.status_code == 0 and not last:  # a transport error
                    response.success()
                    time.sleep(backoff_delay(attempt, base=0.05, cap=1.0))
                    continue
                if is_retryable(response) and not last:
                    response.success()
                    after = retry_after_seconds(response)
                    delay = backoff_delay(attempt, base=0.05, cap=1.0)
                    time.sleep(after if after is not None else delay)
                    name = f"{PATH} [retry]"
                    continue
                if response.status_code != expect:
                    response.failure(f"{response.status_code}: {response.text[:200]}")
                    return
                response.success()
                if expect == 201:
                    with created_lock:
                        created_keys.add(key)
                return

    @task(6)
    def create(self) -> None:
        payment = new_payment()
        key = random_idempotency_key()
        self.pay(key, payment, f"{PATH} [new]", 201)
        self.finished.append((key, payment))

    @task(1)
    def create_with_a_deterministic_key(self) -> None:
        payment = new_payment()
        key = generate_idempotency_key("locust", "create_payment", payment)
        self.pay(key, payment, f"{PATH} [deterministic key]", 201)
        self.finished.append((key, payment))

    @task(2)
    def replay(self) -> None:
        if self.finished:
            key, payment = random.choice(self.finished)
            self.pay(key, payment, f"{PATH} [replay]", 201)

    @task(1)
    def conflicting_body(self) -> None:
        if self.finished:
            key, payment = random.choice(self.finished)
            changed = {**payment, "amount": payment["amount"] + 1}
            self.pay(key, changed, f"{PATH} [conflicting body]", 422)


@events.test_stop.add_listener
def write_created_keys(**_kwargs) -> None:
    path = os.environ.get("TOLLGATE_LOCUST_KEYS")
    if path:
        with open(path, "w", encoding="utf-8") as out, created_lock:
            out.writelines(f"{key}\n" for key in sorted(created_keys))
