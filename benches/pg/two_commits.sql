-- pgbench script (schema `bench`: `DATABASE_SCHEMA=bench payments-server migrations | psql`, plus
-- `CREATE TABLE bench.ref (id text PRIMARY KEY, user_id text NOT NULL, amount_minor bigint NOT NULL,
-- payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())` for two_commits.sql).
-- The reference: two single-row autocommitted INSERTs per payment (tollgate-load's --reference pg-commits).
\set n random(1, 2000000000)
INSERT INTO bench.ref (id, user_id, amount_minor, payload) VALUES ('a-' || :client_id::text || '-' || :n::text, 'load-user', 1234, '{"status": 201}'::jsonb);
INSERT INTO bench.ref (id, user_id, amount_minor, payload) VALUES ('b-' || :client_id::text || '-' || :n::text, 'load-user', 1234, '{"status": 201}'::jsonb);
