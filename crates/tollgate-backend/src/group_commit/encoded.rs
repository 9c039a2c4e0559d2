//! Parameters encoded when a statement is submitted, and a batch's as arrays.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A parameter in PostgreSQL's binary format (or NULL), bound as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Encoded(Option<Bytes>);

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked when it was encoded, against the statement's own type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One parameter of a batch's callers, as a one-dimensional array of their encoded values.
pub(super) struct EncodedArray<'a> {
    pub(super) element: &'a Type,
    pub(super) values: Vec<&'a Encoded>,
}

impl fmt::Debug for EncodedArray<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedArray")
            .field("element", self.element)
            .field("len", &self.values.len())
            .finish()
    }
}

impl ToSql for EncodedArray<'_> {
    /// PostgreSQL's binary array: dimensions, whether any element is NULL, the element type,
    /// the length and lower bound, then each element as its length (-1: NULL) and its bytes.
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let len = i32::try_from(self.values.len())?;
        let has_null = self.values.iter().any(|value| value.0.is_none());
        out.put_i32(1);
        out.put_i32(i32::from(has_null));
        out.put_u32(self.element.oid());
        out.put_i32(len);
        out.put_i32(1);
        for value in &self.values {
            match &value.0 {
                Some(bytes) => {
                    out.put_i32(i32::try_from(bytes.len())?);
                    out.extend_from_slice(bytes);
                }
                None => out.put_i32(-1),
            }
        }
        Ok(IsNull::No)
    }

    /// Its elements were checked against the `one` form's types when they were encoded.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `params` in the binary format of `types`, each checked against its type: what a caller's
/// job keeps until its batch is sent.
pub(super) fn encode(
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Encoded>, crate::BoxError> {
    if types.len() != params.len() {
        return Err(format!(
            "{} parameters for {} placeholders",
            params.len(),
            types.len()
        )
        .into());
    }
    let mut encoded = Vec::with_capacity(params.len());
    for (param, ty) in params.iter().zip(types) {
        let mut buffer = BytesMut::new();
        encoded.push(match param.to_sql_checked(ty, &mut buffer)? {
            IsNull::Yes => Encoded(None),
            IsNull::No => Encoded(Some(buffer.freeze())),
        });
    }
    Ok(encoded)
}

/// Encoded parameters, bound as they are.
pub(super) fn as_params(params: &[Encoded]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio_postgres::types::FromSql;

    use super::*;

    /// `values` as a batch's array of `element`, read back as PostgreSQL would.
    fn round_trip<T>(element: &Type, array: &Type, values: &[Option<T>]) -> Vec<Option<T>>
    where
        T: ToSql + Sync + for<'a> FromSql<'a>,
    {
        let encoded: Vec<Encoded> = values
            .iter()
            .map(|value| {
                encode(std::slice::from_ref(element), &[value]).expect("encoded")[0].clone()
            })
            .collect();
        let array_value = EncodedArray {
            element,
            values: encoded.iter().collect(),
        };
        let mut out = BytesMut::new();
        array_value.to_sql(array, &mut out).expect("an array");
        Vec::<Option<T>>::from_sql(array, &out).expect("read back")
    }

    proptest! {
        /// The callers' encoded values, as one array, read back as the values themselves, NULLs
        /// and empty arrays included.
        #[test]
        fn a_batch_array_reads_back_as_its_values(
            numbers in proptest::collection::vec(proptest::option::of(any::<i64>()), 0..20),
            texts in proptest::collection::vec(proptest::option::of(".{0,12}"), 0..20),
        ) {
            prop_assert_eq!(round_trip(&Type::INT8, &Type::INT8_ARRAY, &numbers), numbers);
            prop_assert_eq!(round_trip(&Type::TEXT, &Type::TEXT_ARRAY, &texts), texts);
        }
    }
}
