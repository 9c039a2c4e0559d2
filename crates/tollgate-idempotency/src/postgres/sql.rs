//! The SQL of the PostgreSQL store. `{schema}` is replaced by the validated schema name. Every
//! statement takes the time as a parameter that is NULL in production, so the database's
//! `now()` decides leases and expiry; tests pass a manual time instead.

/// Table, expiry index, fence sequence and the claim function. Idempotent; run at start-up.
pub(crate) const MIGRATE: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE SEQUENCE IF NOT EXISTS {schema}.idempotency_fence;
CREATE TABLE IF NOT EXISTS {schema}.idempotency_records (
    user_id     text        NOT NULL,
    operation   text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    fence       bigint      NOT NULL,
    state       text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
    lease_until timestamptz,
    status_code integer,
    headers     jsonb,
    body        bytea,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, operation, key)
);
CREATE INDEX IF NOT EXISTS idempotency_records_expires_at ON {schema}.idempotency_records (expires_at);

-- One round trip per claim: lock the row (or insert it), decide, and answer.
-- Returns outcome: acquired | resumed | completed | in_progress | mismatch.
CREATE OR REPLACE FUNCTION {schema}.idempotency_claim(
    p_user text, p_operation text, p_key text, p_fingerprint bytea,
    p_lease_ms bigint, p_ttl_ms bigint, p_now timestamptz)
RETURNS TABLE (outcome text, fence bigint, retry_after_ms bigint,
               status_code integer, headers jsonb, body bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r {schema}.idempotency_records%ROWTYPE;
    v_now timestamptz := coalesce(p_now, now());
    v_fence bigint;
BEGIN
    LOOP
        SELECT * INTO r FROM {schema}.idempotency_records t
        WHERE t.user_id = p_user AND t.operation = p_operation AND t.key = p_key
        FOR UPDATE;
        IF NOT FOUND THEN
            v_fence := nextval('{schema}.idempotency_fence');
            INSERT INTO {schema}.idempotency_records AS t
                (user_id, operation, key, fingerprint, fence, state, lease_until, expires_at)
            VALUES (p_user, p_operation, p_key, p_fingerprint, v_fence, 'in_progress',
                    v_now + p_lease_ms * interval '1 millisecond',
                    v_now + greatest(p_ttl_ms, p_lease_ms) * interval '1 millisecond')
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                RETURN QUERY SELECT 'acquired'::text, v_fence, NULL::bigint, NULL::integer, NULL::jsonb, NULL::bytea;
                RETURN;
            END IF;
            CONTINUE; -- another claim inserted first: lock its row and decide again
        END IF;

        IF r.expires_at <= v_now OR
           (r.state = 'in_progress' AND r.fingerprint = p_fingerprint AND r.lease_until <= v_now) THEN
            v_fence := nextval('{schema}.idempotency_fence');
            UPDATE {schema}.idempotency_records t
            SET fingerprint = p_fingerprint, fence = v_fence, state = 'in_progress',
                lease_until = v_now + p_lease_ms * interval '1 millisecond',
                -- Never expire while the lease is held: a record read as absent would be
                -- claimed afresh, and charged again, under a live owner.
                expires_at = greatest(CASE WHEN r.expires_at <= v_now
                                           THEN v_now + p_ttl_ms * interval '1 millisecond'
                                           ELSE t.expires_at END,
                                      v_now + p_lease_ms * interval '1 millisecond'),
                status_code = NULL, headers = NULL, body = NULL
            WHERE t.user_id = p_user AND t.operation = p_operation AND t.key = p_key;
            RETURN QUERY SELECT CASE WHEN r.expires_at <= v_now THEN 'acquired' ELSE 'resumed' END,
                                v_fence, NULL::bigint, NULL::integer, NULL::jsonb, NULL::bytea;
            RETURN;
        END IF;

        IF r.fingerprint <> p_fingerprint THEN
            RETURN QUERY SELECT 'mismatch'::text, NULL::bigint, NULL::bigint, NULL::integer, NULL::jsonb, NULL::bytea;
        ELSIF r.state = 'completed' THEN
            RETURN QUERY SELECT 'completed'::text, r.fence, NULL::bigint, r.status_code, r.headers, r.body;
        ELSE
            RETURN QUERY SELECT 'in_progress'::text, r.fence,
                ceil(extract(epoch FROM (r.lease_until - v_now)) * 1000)::bigint,
                NULL::integer, NULL::jsonb, NULL::bytea;
        END IF;
        RETURN;
    END LOOP;
END
$$;
"#;

/// The fast path for a key never seen (the common case): one INSERT that does nothing if the
/// row exists, in which case [`CLAIM`] decides. Parameters as in [`CLAIM`]; returns the fence.
pub(crate) const CLAIM_FRESH: &str = "
INSERT INTO {schema}.idempotency_records
    (user_id, operation, key, fingerprint, fence, state, lease_until, expires_at)
VALUES ($1, $2, $3, $4, nextval('{schema}.idempotency_fence'), 'in_progress',
        coalesce($7, now()) + $5::bigint * interval '1 millisecond',
        coalesce($7, now()) + greatest($5::bigint, $6::bigint) * interval '1 millisecond')
ON CONFLICT DO NOTHING
RETURNING fence";

/// [`CLAIM_FRESH`] for each row of `{from}`, `$1`–`$7` standing for expressions over its
/// columns; returns the key and fence of each row it claimed.
pub(crate) const CLAIM_FRESH_ROWS: &str = "
INSERT INTO {schema}.idempotency_records
    (user_id, operation, key, fingerprint, fence, state, lease_until, expires_at)
SELECT $1, $2, $3, $4, nextval('{schema}.idempotency_fence'), 'in_progress',
       coalesce($7, now()) + $5::bigint * interval '1 millisecond',
       coalesce($7, now()) + greatest($5::bigint, $6::bigint) * interval '1 millisecond'
FROM {from}
ON CONFLICT DO NOTHING
RETURNING user_id, operation, key, fence";

/// [`COMPLETE`] for each row of `{from}`, `$1`–`$9` standing for expressions over its
/// columns; returns the key of each record it completed.
pub(crate) const COMPLETE_ROWS: &str = "
UPDATE {schema}.idempotency_records AS r
SET state = 'completed', status_code = $5, headers = $6, body = $7, lease_until = NULL,
    expires_at = coalesce($9, now()) + $8::bigint * interval '1 millisecond'
FROM {from}
WHERE r.user_id = $1 AND r.operation = $2 AND r.key = $3 AND r.fence = $4
  AND r.state = 'in_progress' AND r.expires_at > coalesce($9, now())
RETURNING r.user_id, r.operation, r.key";

/// `template` with each `$k` replaced by `values[k - 1]` (in one pass, so a value's own `$`
/// stays as it is), then `{schema}` and `{from}`.
pub(crate) fn over_rows(template: &str, schema: &str, from: &str, values: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(rest.len() - at - 1, |end| end);
        let number: Option<usize> = rest[at + 1..at + 1 + digits].parse().ok();
        match number.and_then(|k| values.get(k.checked_sub(1)?)) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out.replace("{schema}", schema).replace("{from}", from)
}

/// $1 user, $2 operation, $3 key, $4 fingerprint, $5 lease ms, $6 ttl ms, $7 now (NULL: now()).
pub(crate) const CLAIM: &str = "SELECT outcome, fence, retry_after_ms, status_code, headers, body \
     FROM {schema}.idempotency_claim($1, $2, $3, $4, $5, $6, $7)";

/// $1 user, $2 operation, $3 key, $4 fence, $5 status, $6 headers, $7 body, $8 ttl ms, $9 now.
/// Only the live owner's fence matches; zero rows means fenced.
pub(crate) const COMPLETE: &str = "
UPDATE {schema}.idempotency_records
SET state = 'completed', status_code = $5, headers = $6, body = $7, lease_until = NULL,
    expires_at = coalesce($9, now()) + $8::bigint * interval '1 millisecond'
WHERE user_id = $1 AND operation = $2 AND key = $3 AND fence = $4
  AND state = 'in_progress' AND expires_at > coalesce($9, now())";

/// $1 user, $2 operation, $3 key, $4 fence, $5 now. Forgets the record.
pub(crate) const RELEASE_NOTHING_HAPPENED: &str = "
DELETE FROM {schema}.idempotency_records
WHERE user_id = $1 AND operation = $2 AND key = $3 AND fence = $4
  AND state = 'in_progress' AND expires_at > coalesce($5, now())";

/// $1 user, $2 operation, $3 key, $4 fence, $5 now. Keeps the record, ends the lease.
pub(crate) const RELEASE_AMBIGUOUS: &str = "
UPDATE {schema}.idempotency_records SET lease_until = coalesce($5, now())
WHERE user_id = $1 AND operation = $2 AND key = $3 AND fence = $4
  AND state = 'in_progress' AND expires_at > coalesce($5, now())";

/// $1 batch size, $2 now. Deletes one batch of expired records (uses the expires_at index).
pub(crate) const CLEANUP: &str = "
DELETE FROM {schema}.idempotency_records
WHERE ctid IN (SELECT ctid FROM {schema}.idempotency_records
               WHERE expires_at <= coalesce($2, now()) LIMIT $1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_forms_take_expressions_for_the_parameters() {
        let values = ["i.p1", "i.p2", "i.p3", "i.p4", "i.p5", "i.p6", "$7"];
        let claim = over_rows(CLAIM_FRESH_ROWS, "s", "unnest($1::text[]) AS i", &values);
        assert!(claim.contains("SELECT i.p1, i.p2, i.p3, i.p4, nextval('s.idempotency_fence')"));
        assert!(
            claim.contains("coalesce($7, now()) + i.p5::bigint"),
            "{claim}"
        );
        assert!(claim.contains("FROM unnest($1::text[]) AS i"), "{claim}");
        assert!(!claim.contains("{"), "{claim}");
    }

    /// Ready to distribute by user (Citus, `user_id` the distribution column): the table's key
    /// starts with the user, and every statement of the request path names one user — the
    /// claim function's lookups and writes, and each statement's `WHERE`. The cleanup is the
    /// exception: a background sweep over every user, which runs on each shard.
    #[test]
    fn every_request_statement_names_the_user() {
        assert!(MIGRATE.contains("PRIMARY KEY (user_id, operation, key)"));
        assert!(MIGRATE.contains("WHERE t.user_id = p_user AND t.operation = p_operation"));
        assert!(CLAIM_FRESH.contains("(user_id, operation, key,"));
        assert!(
            CLAIM.contains("idempotency_claim($1,"),
            "the user is the first argument"
        );
        for statement in [COMPLETE, RELEASE_NOTHING_HAPPENED, RELEASE_AMBIGUOUS] {
            assert!(statement.contains("WHERE user_id = $1 AND"), "{statement}");
        }
        assert!(
            !CLEANUP.contains("user_id"),
            "the sweep is the one statement over all users"
        );
    }
}
