//! The ledger's SQL. The writes of a payment are composed with fragments of the
//! idempotency and audit crates, so their parameter numbers are computed, never written by hand:
//! each fragment says how many parameters it takes, and a test checks every statement's
//! placeholders against the parameters bound to it.

use tokio_postgres::types::Type;
use tollgate_audit::postgres::{EventParams, PostgresAuditLog};
use tollgate_backend::group_commit::{Batched, callers};
use tollgate_backend::postgres::Query;
use tollgate_idempotency::postgres::{ClaimParams, CompletionParams, PostgresStore};

use super::BoxError;

/// The `payments` table in `{schema}`.
pub(crate) const MIGRATE: &str = "
CREATE TABLE IF NOT EXISTS {schema}.payments (
    transaction_id  text NOT NULL,
    user_id         text NOT NULL,
    idempotency_key text,
    status          text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        text NOT NULL,
    description     text,
    payment_method  text NOT NULL,
    metadata        jsonb NOT NULL,
    decline_code    text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The user first: the table can be distributed by user (Citus).
    PRIMARY KEY (user_id, transaction_id)
);
-- Not unique: a key may be used again once its idempotency record expired.
CREATE INDEX IF NOT EXISTS payments_user_key
    ON {schema}.payments (user_id, idempotency_key, created_at);
";

/// The payment columns, in the order [`PAYMENT_PARAMS`] binds them.
pub(crate) const COLUMNS: &str = "transaction_id, user_id, idempotency_key, status, \
    amount_minor, currency, description, payment_method, metadata, decline_code, created_at";

/// How many values a payment row binds (one per column of [`COLUMNS`]).
pub(crate) const PAYMENT_PARAMS: usize = 11;

/// The type of each column of [`COLUMNS`]: an `INSERT … SELECT` must say them.
const PAYMENT_TYPES: [&str; PAYMENT_PARAMS] = [
    "text",
    "text",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "jsonb",
    "text",
    "timestamptz",
];

/// The same types as the driver names them, for statements sent unnamed.
pub(crate) const PAYMENT_PARAM_TYPES: [Type; PAYMENT_PARAMS] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::TIMESTAMPTZ,
];

/// How many values the status update binds: status, decline code, transaction id.
pub(crate) const STATUS_PARAMS: usize = 3;

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pending row and its `payment_started` event, one statement: the event's parameters
/// first, then the row's. `audit_insert(first)` is the audit crate's `INSERT … SELECT`.
pub(crate) fn insert_pending(schema: &str, audit_insert: impl Fn(usize) -> String) -> String {
    let row = placeholders(EventParams::COUNT + 1, PAYMENT_PARAMS);
    format!(
        "WITH p AS (INSERT INTO {schema}.payments ({COLUMNS}) VALUES ({row})) {}",
        audit_insert(1)
    )
}

/// The claim of a key never seen, the pending row and its `payment_started` event, one
/// statement whose writes happen only if the claim did (the key had no record): the claim's
/// parameters, then the event's, then the row's. Returns the claim's fence, or no row.
pub(crate) fn claim_pending(
    schema: &str,
    claim: &str,
    audit_insert: impl Fn(usize) -> String,
) -> String {
    let event = ClaimParams::COUNT + 1;
    let row: Vec<String> = PAYMENT_TYPES
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}", event + EventParams::COUNT + i))
        .collect();
    format!(
        "WITH c AS ({claim}), \
         p AS (INSERT INTO {schema}.payments ({COLUMNS}) SELECT {} WHERE EXISTS (SELECT 1 FROM c)), \
         a AS ({} WHERE EXISTS (SELECT 1 FROM c)) \
         SELECT fence FROM c",
        row.join(", "),
        audit_insert(event)
    )
}

/// The fenced idempotency completion, the final status and the audit event, one statement
/// whose writes all happen only if the lease's fence still owns the key: the completion's
/// parameters (`$1` the user, which the payment's update filters by too), then the status
/// update's, then the event's. Returns one row when it wrote,
/// none when the fence was taken over.
pub(crate) fn finish(
    schema: &str,
    completion: &str,
    audit_insert: impl Fn(usize) -> String,
) -> String {
    let status = CompletionParams::COUNT + 1;
    let (decline, id) = (status + 1, status + 2);
    format!(
        "WITH c AS ({completion}), \
         u AS (UPDATE {schema}.payments SET status = ${status}, decline_code = ${decline}, \
               updated_at = now() \
               WHERE user_id = $1 AND transaction_id = ${id} AND EXISTS (SELECT 1 FROM c)) \
         {} WHERE EXISTS (SELECT 1 FROM c) RETURNING 1",
        audit_insert(status + STATUS_PARAMS)
    )
}

/// How many leading parameters of both writes name the idempotency record they touch: user,
/// operation, key. Two callers with the same never share a batch statement.
pub(crate) const KEY_PARAMS: usize = 3;

/// `{alias}.p{first}`, `{alias}.p{first + 1}`, …: `N` columns of the callers of a batch.
fn callers_columns<const N: usize>(alias: &str, first: usize) -> [String; N] {
    std::array::from_fn(|i| format!("{alias}.p{}", first + i))
}

/// The callers of a batch (`i`, [`callers`](tollgate_backend::group_commit::callers)) joined to
/// the keys a statement `c` returned: the callers whose claim or completion was written.
const JOINED: &str = "w AS (SELECT i.*{extra} FROM i JOIN c \
    ON c.user_id = i.p1 AND c.operation = i.p2 AND c.key = i.p3)";

/// [`claim_pending`] for every caller of a batch, one statement: its parameters are
/// `claim_pending`'s, each an array of the callers' values. Returns the fence and position of
/// each caller whose key it claimed.
pub(crate) fn claim_pending_many(schema: &str, types: &[Type]) -> Result<String, BoxError> {
    let claim = callers_columns::<{ ClaimParams::COUNT }>("i", 1);
    let claim =
        PostgresStore::claim_many_statement_in(schema, "i", &claim.each_ref().map(String::as_str))?;
    let event = callers_columns::<{ EventParams::COUNT }>("w", ClaimParams::COUNT + 1);
    let audit = PostgresAuditLog::insert_many_statement_in(
        schema,
        "w",
        &event.each_ref().map(String::as_str),
    )?;
    let row = callers_columns::<PAYMENT_PARAMS>("w", ClaimParams::COUNT + EventParams::COUNT + 1);
    Ok(format!(
        "WITH i AS (SELECT * FROM {}), c AS ({claim}), {}, \
         p AS (INSERT INTO {schema}.payments ({COLUMNS}) SELECT {} FROM w), \
         a AS ({audit}) \
         SELECT w.fence, w.n FROM w",
        callers(types, "i"),
        JOINED.replace("{extra}", ", c.fence"),
        row.join(", "),
    ))
}

/// [`finish`] for every caller of a batch, one statement: its parameters are `finish`'s, each
/// an array of the callers' values. Returns a row (`1`, position) for each caller whose lease
/// still owned its key, as `finish` does.
pub(crate) fn finish_many(schema: &str, types: &[Type]) -> Result<String, BoxError> {
    let completion = callers_columns::<{ CompletionParams::COUNT }>("i", 1);
    let completion = PostgresStore::completion_many_statement_in(
        schema,
        "i",
        &completion.each_ref().map(String::as_str),
    )?;
    let first_status = CompletionParams::COUNT + 1;
    let [status, decline, id] = callers_columns::<STATUS_PARAMS>("w", first_status);
    let event = callers_columns::<{ EventParams::COUNT }>("w", first_status + STATUS_PARAMS);
    let audit = PostgresAuditLog::insert_many_statement_in(
        schema,
        "w",
        &event.each_ref().map(String::as_str),
    )?;
    Ok(format!(
        "WITH i AS (SELECT * FROM {}), c AS ({completion}), {}, \
         u AS (UPDATE {schema}.payments AS t SET status = {status}, decline_code = {decline}, \
               updated_at = now() FROM w WHERE t.user_id = w.p1 AND t.idempotency_key = w.p3 \
               AND t.transaction_id = {id}), \
         a AS ({audit}) \
         SELECT 1, w.n FROM w",
        callers(types, "i"),
        JOINED.replace("{extra}", ""),
    ))
}

/// The ledger's two writes on the payment path, each one statement, with its form for the
/// callers of a whole batch.
pub(crate) struct Writes {
    pub(crate) claim_pending: Batched,
    pub(crate) finish: Batched,
}

impl Writes {
    /// The statements for `schema`, composed from the idempotency and audit crates' parts.
    pub(crate) fn new(schema: &str) -> Result<Self, BoxError> {
        let audit_insert = |first| {
            tollgate_audit::postgres::PostgresAuditLog::insert_select_statement_in(schema, first)
                .unwrap_or_default()
        };
        let claim = PostgresStore::claim_statement_in(schema)?;
        let completion = PostgresStore::completion_statement_in(schema)?;
        let types = |parts: &[&[Type]]| parts.concat();
        let (event, row) = (&EventParams::TYPES[..], &PAYMENT_PARAM_TYPES[..]);
        let status = [Type::TEXT, Type::TEXT, Type::TEXT];
        let claim_pending = Query::new(
            claim_pending(schema, &claim, audit_insert),
            &types(&[&ClaimParams::TYPES, event, row]),
        );
        let finish = Query::new(
            finish(schema, &completion, audit_insert),
            &types(&[&CompletionParams::TYPES, &status, event]),
        );
        let claim_many = claim_pending_many(schema, claim_pending.types())?;
        let finish_many = finish_many(schema, finish.types())?;
        Ok(Writes {
            claim_pending: Batched::new(claim_pending, claim_many, KEY_PARAMS)?,
            finish: Batched::new(finish, finish_many, KEY_PARAMS)?,
        })
    }

    /// The same writes, each form a PL/pgSQL function (planned once per server connection, not
    /// at every call as unnamed statements are): their DDL, and the writes that call them.
    pub(crate) fn as_functions(&self, schema: &str) -> Result<(Vec<String>, Writes), BoxError> {
        // The output columns are variables inside the functions: names no statement uses.
        let (claim_ddl, claim_one) =
            (self.claim_pending.one()).as_function(schema, "tollgate_claim_pending", "bigint");
        let (claim_many_ddl, claim_many) = self.claim_pending.many().as_table_function(
            schema,
            "tollgate_claim_pending_many",
            "tollgate_fence bigint, tollgate_position bigint",
        );
        let (finish_ddl, finish_one) =
            (self.finish.one()).as_function(schema, "tollgate_finish_payment", "integer");
        let (finish_many_ddl, finish_many) = self.finish.many().as_table_function(
            schema,
            "tollgate_finish_payment_many",
            "tollgate_written integer, tollgate_position bigint",
        );
        let ddl = vec![claim_ddl, claim_many_ddl, finish_ddl, finish_many_ddl];
        let writes = Writes {
            claim_pending: Batched::new(claim_one, claim_many.text(), KEY_PARAMS)?,
            finish: Batched::new(finish_one, finish_many.text(), KEY_PARAMS)?,
        };
        Ok((ddl, writes))
    }
}

/// One payment by a condition over `$1…`.
pub(crate) fn select(schema: &str, condition: &str) -> String {
    format!("SELECT {COLUMNS} FROM {schema}.payments WHERE {condition}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The distinct `$n` placeholders of a statement.
    fn numbers(sql: &str) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let bytes = sql.as_bytes();
        for (i, _) in sql.match_indices('$') {
            let digits: String = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| char::from(b))
                .collect();
            if let Ok(n) = digits.parse() {
                found.insert(n);
            }
        }
        found
    }

    /// Every parameter bound is used, and nothing else is: `$1…$n` exactly, with the real
    /// fragments of the idempotency and audit crates (a pool that never connects).
    #[tokio::test]
    async fn placeholders_match_the_parameters_bound() {
        let pg: tokio_postgres::Config =
            "postgres://nobody@127.0.0.1:1/none".parse().expect("a URL");
        let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager)
            .build()
            .expect("a pool");
        let store = tollgate_idempotency::postgres::PostgresStore::open(pool.clone(), "s")
            .expect("a store");
        let config = tollgate_audit::postgres::AuditLogConfig::default().schema("s");
        let audit =
            tollgate_audit::postgres::PostgresAuditLog::open(pool, config).expect("an audit log");
        let audit_insert = |first| audit.insert_select_statement(first);

        let pending = insert_pending("s", audit_insert);
        let bound = EventParams::COUNT + PAYMENT_PARAMS;
        assert_eq!(numbers(&pending), (1..=bound).collect(), "{pending}");

        let finish = finish("s", &store.completion_statement(), audit_insert);
        let bound = CompletionParams::COUNT + STATUS_PARAMS + EventParams::COUNT;
        assert_eq!(numbers(&finish), (1..=bound).collect(), "{finish}");

        let claim = claim_pending("s", &store.claim_statement(), audit_insert);
        let bound = ClaimParams::COUNT + EventParams::COUNT + PAYMENT_PARAMS;
        assert_eq!(numbers(&claim), (1..=bound).collect(), "{claim}");
    }

    /// The batch forms bind each of their single forms' parameters once, as an array, and
    /// reach each caller's rows by its user, operation and key (the [`KEY_PARAMS`]).
    #[test]
    fn the_batch_forms_bind_the_same_parameters_as_arrays() {
        let writes = Writes::new("s").expect("statements");
        for write in [&writes.claim_pending, &writes.finish] {
            let (one, many) = (write.one(), write.many().text());
            assert_eq!(numbers(many), (1..=one.types().len()).collect(), "{many}");
            assert!(many.contains("ON c.user_id = i.p1 AND c.operation = i.p2 AND c.key = i.p3"));
            assert!(many.ends_with("w.n FROM w"), "{many}");
        }
    }

    /// Ready to distribute by user: the payments table's key starts with the user, and every
    /// statement of the payment path names one user (each `UPDATE` and `SELECT` filters by it,
    /// each `INSERT` writes it), with the idempotency and audit crates' parts composed in.
    #[test]
    fn every_payment_statement_names_the_user() {
        assert!(MIGRATE.contains("PRIMARY KEY (user_id, transaction_id)"));
        let writes = Writes::new("s").expect("statements");
        let audit_insert = |first| {
            tollgate_audit::postgres::PostgresAuditLog::insert_select_statement_in("s", first)
                .expect("a schema")
        };
        let pending = insert_pending("s", audit_insert);
        let find = select("s", "transaction_id = $1 AND user_id = $2");
        let statements = [
            writes.claim_pending.one().text(),
            writes.finish.one().text(),
            &pending,
            &find,
        ];
        for statement in statements {
            for update in statement
                .match_indices("UPDATE")
                .map(|(at, _)| &statement[at..])
            {
                let filter = &update[update.find("WHERE").unwrap_or(0)..];
                assert!(filter.starts_with("WHERE user_id = $1"), "{update}");
            }
            for insert in statement
                .match_indices("INSERT INTO")
                .map(|(at, _)| &statement[at..])
            {
                let columns = &insert[..insert.find(')').unwrap_or(insert.len())];
                assert!(columns.contains("user_id"), "{columns}");
            }
        }
        assert!(find.contains("user_id = $2"));
    }
}
