"""Ten simultaneous requests with the same Idempotency-Key and body: exactly one executes,
the others get its answer replayed (or ``409`` while it runs, and its replay on retry).

    python examples/python/test_concurrent.py --url http://localhost:8000 --api-key test-api-key

Exits non-zero, naming what went wrong, if more than one request executed or the answers
differ.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import threading

import httpx

from tollgate_client import random_idempotency_key, retry_with_backoff

PAYMENT = {
    "amount": 123.0,
    "currency": "JPY",
    "description": "concurrent test",
    "payment_method": "card",
    "metadata": {"order_id": "concurrent-1"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--api-key", default="test-api-key")
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()

    key = random_idempotency_key()
    headers = {"Authorization": f"Bearer {args.api_key}", "Idempotency-Key": key}
    start = threading.Barrier(args.requests)

    def one(client: httpx.Client) -> httpx.Response:
        start.wait()  # all requests leave together
        return retry_with_backoff(
            lambda: client.post(f"{args.url}/api/v1/payments", json=PAYMENT, headers=headers),
            max_retries=10,
            base=0.05,
            cap=1.0,
        )

    with httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=args.requests)) as client:
        with concurrent.futures.ThreadPoolExecutor(args.requests) as pool:
            responses = list(pool.map(lambda _: one(client), range(args.requests)))

    statuses = [r.status_code for r in responses]
    executed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "false"]
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    bodies = {r.text for r in responses}
    print(f"key {key}: statuses {statuses}")
    print(f"executed {len(executed)}, replayed {len(replayed)}, distinct bodies {len(bodies)}")
    problems = []
    if statuses != [201] * args.requests:
        problems.append(f"expected {args.requests} x 201, got {statuses}")
    if len(executed) != 1:
        problems.append(f"expected exactly one execution, got {len(executed)}")
    if len(bodies) != 1:
        problems.append("the replays differ from the original answer")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
