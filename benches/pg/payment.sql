-- pgbench script (schema `bench`: `DATABASE_SCHEMA=bench payments-server migrations | psql`, plus
-- `CREATE TABLE bench.ref (id text PRIMARY KEY, user_id text NOT NULL, amount_minor bigint NOT NULL,
-- payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())` for two_commits.sql).
-- The server's two statements of a payment, written out with literal values; see docs/performance.md.
\set n random(1, 2000000000)
\set u random(1, 100)
WITH c AS (
INSERT INTO bench.idempotency_records
    (user_id, operation, key, fingerprint, fence, state, lease_until, expires_at)
VALUES ('load-user-' || :u::text, 'POST /api/v1/payments', 'key-' || :client_id::text || '-' || :n::text, '\x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20'::bytea, nextval('bench.idempotency_fence'), 'in_progress',
        now() + 60000::bigint * interval '1 millisecond',
        now() + 86400000::bigint * interval '1 millisecond')
ON CONFLICT DO NOTHING
RETURNING fence), p AS (INSERT INTO bench.payments (transaction_id, user_id, idempotency_key, status, amount_minor, currency, description, payment_method, metadata, decline_code, created_at) SELECT 'txn-' || :client_id::text || '-' || :n::text, 'load-user-' || :u::text, 'key-' || :client_id::text || '-' || :n::text, 'pending', 1205, 'USD', 'load', 'card', '{"order_id": "o1"}'::jsonb, NULL, now() WHERE EXISTS (SELECT 1 FROM c)), a AS (INSERT INTO bench.audit_events (id, occurred_at, user_id, action, outcome, status_code, idempotency_key, transaction_id, request_id, latency_us, fields) SELECT gen_random_uuid(), now(), 'load-user-' || :u::text, 'payment_started', 'success', 202, 'key-' || :client_id::text || '-' || :n::text, 'txn-' || :client_id::text || '-' || :n::text, 'req', 12, '{}'::jsonb WHERE EXISTS (SELECT 1 FROM c)) SELECT fence FROM c \gset
WITH c AS (
UPDATE bench.idempotency_records
SET state = 'completed', status_code = 201, headers = '[["content-type", "application/json"]]'::jsonb, body = '\x7b22747261'::bytea, lease_until = NULL,
    expires_at = now() + 86400000::bigint * interval '1 millisecond'
WHERE user_id = 'load-user-' || :u::text AND operation = 'POST /api/v1/payments' AND key = 'key-' || :client_id::text || '-' || :n::text AND fence = :fence
  AND state = 'in_progress' AND expires_at > now() RETURNING 1), u AS (UPDATE bench.payments SET status = 'succeeded', decline_code = NULL, updated_at = now() WHERE transaction_id = 'txn-' || :client_id::text || '-' || :n::text AND EXISTS (SELECT 1 FROM c)) INSERT INTO bench.audit_events (id, occurred_at, user_id, action, outcome, status_code, idempotency_key, transaction_id, request_id, latency_us, fields) SELECT gen_random_uuid(), now(), 'load-user-' || :u::text, 'payment_attempt', 'success', 201, 'key-' || :client_id::text || '-' || :n::text, 'txn-' || :client_id::text || '-' || :n::text, 'req', 12, '{"resumed": 0}'::jsonb WHERE EXISTS (SELECT 1 FROM c);
