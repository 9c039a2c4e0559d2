-- wrk script: an authenticated JSON payment, the same for every request (a flood of one user).
wrk.method = "POST"
wrk.body = '{"amount": "10.00", "currency": "USD", "payment_method": "card", "description": "flood"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer tollgate-load-key-0"
wrk.headers["Idempotency-Key"] = "flood-key-00000000"
