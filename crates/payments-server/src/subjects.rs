//! What a caller's request is limited as, beyond who it is: its tier and the values of the
//! custom dimensions. Both come from the configuration file and are replaced whole by a reload.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::auth::Caller;
use crate::config::{FileConfig, dimension_headers, tier_of_users};

/// The longest dimension value counted: longer ones (and ones that are not visible ASCII) are
/// treated as absent, so a client cannot make a counter's key as large as a header.
const MAX_DIMENSION_VALUE: usize = 128;

/// The tiers of users and where dimensions are read, as one configuration file says.
#[derive(Debug, Default)]
pub(crate) struct Subjects {
    tier_of_user: HashMap<Arc<str>, Arc<str>>,
    dimensions: Vec<(Arc<str>, HeaderName)>,
}

impl Subjects {
    pub(crate) fn new(file: &FileConfig) -> Result<Self, String> {
        Ok(Subjects {
            tier_of_user: tier_of_users(&file.tier)?,
            dimensions: dimension_headers(&file.dimension)?,
        })
    }

    /// The caller's tier: its key's, or else the one the file names it in, or none (the
    /// defaults).
    pub(crate) fn tier_of(&self, caller: &Caller) -> Option<Arc<str>> {
        (caller.tier.clone()).or_else(|| self.tier_of_user.get(&caller.user).cloned())
    }

    /// The request's value of each configured dimension that it carries.
    pub(crate) fn dimensions(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        self.dimensions
            .iter()
            .filter_map(|(name, header)| {
                let value = headers.get(header)?.to_str().ok()?.trim();
                let countable = !value.is_empty()
                    && value.len() <= MAX_DIMENSION_VALUE
                    && value.bytes().all(|b| b.is_ascii_graphic());
                countable.then(|| (name.to_string(), value.to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dimension_value_is_a_short_visible_token() {
        let file =
            FileConfig::parse("[dimension.merchant]\nheader = \"merchant-id\"\n").expect("valid");
        let subjects = Subjects::new(&file).expect("valid");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("merchant-id", value.parse().expect("a value"));
            subjects.dimensions(&headers)
        };
        assert_eq!(with(" m_42 "), [("merchant".to_owned(), "m_42".to_owned())]);
        assert!(with(&"m".repeat(129)).is_empty());
        assert!(with("two words").is_empty());
        assert!(subjects.dimensions(&HeaderMap::new()).is_empty());
    }
}
