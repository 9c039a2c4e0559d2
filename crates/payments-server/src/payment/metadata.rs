//! A payment's metadata as stored: string pairs sorted by key in one allocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A payment's metadata: its pairs sorted by key, as a `BTreeMap` would iterate them, in one
/// exactly sized allocation. A `BTreeMap` keeps even a single entry in a node of eleven slots
/// (544 bytes for `String` pairs), and the memory backends keep every payment, so this is a
/// sixth of what a stored payment costs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Metadata(Box<[(String, String)]>);

impl Metadata {
    /// The pairs, by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        Metadata(map.into_iter().collect())
    }
}

impl Serialize for Metadata {
    /// A JSON object, keys in order: what the `BTreeMap` it replaces wrote.
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(input).map(Metadata::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_the_order_and_the_json_of_a_sorted_map() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "1"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let metadata = Metadata::from(map.clone());
        assert_eq!(
            serde_json::to_string(&metadata).expect("json"),
            serde_json::to_string(&map).expect("json")
        );
        let keys: Vec<&str> = metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let back: Metadata =
            serde_json::from_str(r#"{"c": "3", "a": "1", "b": "2"}"#).expect("an object");
        assert_eq!(back, metadata);
        assert_eq!(Metadata::default().iter().count(), 0);
    }
}
