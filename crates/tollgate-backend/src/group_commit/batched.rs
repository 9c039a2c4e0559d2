//! [`Batched`]: a statement with a form for many callers at once.

use tokio_postgres::types::Type;

use crate::Error;
use crate::postgres::{Query, sql_type};

/// A statement with a second form that does the same for many callers in one execution. See
/// [One statement for many callers](super#one-statement-for-many-callers).
///
/// ```no_run
/// # async fn example(writes: tollgate_backend::group_commit::GroupCommit)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokio_postgres::types::Type;
/// use tollgate_backend::group_commit::{Batched, callers};
/// use tollgate_backend::postgres::Query;
///
/// let one = Query::new(
///     "INSERT INTO shop.orders (id, total) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
///     &[Type::TEXT, Type::INT8],
/// );
/// // The same for every caller of a batch; each inserted row goes back by its position.
/// let many = format!(
///     "WITH i AS (SELECT * FROM {}), \
///      c AS (INSERT INTO shop.orders (id, total) SELECT p1, p2 FROM i \
///            ON CONFLICT DO NOTHING RETURNING id) \
///      SELECT c.id, i.n FROM c JOIN i ON i.p1 = c.id",
///     callers(one.types(), "i"),
/// );
/// // Two callers with the same first parameter (the order id) never share an execution.
/// let insert = Arc::new(Batched::new(one, many, 1)?);
/// let rows = writes.batch_rows(&insert, &[&"order-1", &1250_i64]).await?;
/// assert!(rows.len() <= 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Batched {
    one: Query,
    many: Query,
    key: usize,
}

impl Batched {
    /// `one`, and `many`: the same writes for every caller of a batch at once.
    ///
    /// `many`'s parameter `$k` is an array of `one`'s `$k`, one element per caller in the
    /// batch's order ([`callers`] makes them rows). It returns the rows `one` would have
    /// returned to each caller, with one more column last: the caller's position in the
    /// batch (`int8`, from 1). The first `key` parameters identify the rows a caller's `one`
    /// touches: callers whose are equal never share an execution of `many`.
    ///
    /// Fails if a parameter type has no array type known here (the built-in scalars have).
    pub fn new(one: Query, many: impl Into<String>, key: usize) -> Result<Self, Error> {
        let types = one
            .types()
            .iter()
            .map(|ty| {
                array_of(ty).ok_or_else(|| {
                    let what = format!("no array type for parameters of type {ty}");
                    Error::backend(what, false)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let many = Query::new(many, &types);
        Ok(Batched { one, many, key })
    }

    /// The form for one caller.
    pub fn one(&self) -> &Query {
        &self.one
    }

    /// The form for many.
    pub fn many(&self) -> &Query {
        &self.many
    }

    /// How many leading parameters identify the rows a caller touches.
    pub(super) fn key(&self) -> usize {
        self.key
    }
}

/// The callers of a batch as rows, for a [`Batched`] statement's `many` form:
/// `unnest($1::text[], …) WITH ORDINALITY AS {alias}(p1, …, pN, n)`, where column `pK` holds
/// a caller's `$K` (of `types`, the `one` form's parameter types) and `n` its position.
pub fn callers(types: &[Type], alias: &str) -> String {
    let arrays: Vec<String> = (types.iter().enumerate())
        .map(|(i, ty)| format!("${}::{}[]", i + 1, sql_type(ty)))
        .collect();
    let columns: Vec<String> = (1..=types.len()).map(|k| format!("p{k}")).collect();
    format!(
        "unnest({}) WITH ORDINALITY AS {alias}({}, n)",
        arrays.join(", "),
        columns.join(", ")
    )
}

/// The array type whose elements are `ty`, for the scalar types PostgreSQL has built in.
fn array_of(ty: &Type) -> Option<Type> {
    let array = match *ty {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        Type::VARCHAR => Type::VARCHAR_ARRAY,
        Type::BYTEA => Type::BYTEA_ARRAY,
        Type::JSON => Type::JSON_ARRAY,
        Type::JSONB => Type::JSONB_ARRAY,
        Type::UUID => Type::UUID_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        _ => return None,
    };
    Some(array)
}
