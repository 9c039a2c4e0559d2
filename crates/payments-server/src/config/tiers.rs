//! `[tier.<name>]` and `[dimension.<name>]`: which users get a tier's policies, and where a
//! custom dimension's value is read.
//!
//! ```toml
//! [tier.premium]
//! users = ["alice"]
//! [tier.premium.policy.payments]   # replaces the default `payments` limit for alice
//! limit = 100
//!
//! [dimension.merchant]             # `scope = "dimension"`, `dimension = "merchant"` policies
//! header = "Merchant-Id"           # count per value of this request header
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderName;
use serde::Deserialize;
use tollgate_ratelimit::config::{PolicyOverride, TierConfig};

/// One `[tier.<name>]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierSection {
    /// The users who carry the tier unless their API key names another.
    #[serde(default)]
    pub(crate) users: Vec<String>,
    /// By policy name: what the tier changes in the default of that name, or a policy it adds.
    #[serde(default)]
    pub(crate) policy: BTreeMap<String, PolicyOverride>,
}

impl TierSection {
    pub(crate) fn policies(&self) -> TierConfig {
        TierConfig {
            policy: self.policy.clone(),
        }
    }
}

/// One `[dimension.<name>]` section: where the dimension's value comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DimensionSection {
    /// The request header holding the value.
    pub(crate) header: String,
}

/// Each user named in a tier, and that tier. A user in two tiers is an error.
pub(crate) fn tier_of_users(
    tiers: &BTreeMap<String, TierSection>,
) -> Result<HashMap<Arc<str>, Arc<str>>, String> {
    let mut of_user: HashMap<Arc<str>, Arc<str>> = HashMap::new();
    for (tier, section) in tiers {
        let tier: Arc<str> = tier.as_str().into();
        for user in &section.users {
            if let Some(other) = of_user.insert(user.as_str().into(), Arc::clone(&tier)) {
                return Err(format!(
                    "tier.{tier}.users: user `{user}` is also in tier `{other}`"
                ));
            }
        }
    }
    Ok(of_user)
}

/// The header each dimension is read from.
pub(crate) fn dimension_headers(
    dimensions: &BTreeMap<String, DimensionSection>,
) -> Result<Vec<(Arc<str>, HeaderName)>, String> {
    dimensions
        .iter()
        .map(|(name, section)| {
            let header = HeaderName::try_from(section.header.as_str()).map_err(|_| {
                format!(
                    "dimension.{name}.header: `{}` is not a header name",
                    section.header
                )
            })?;
            Ok((Arc::from(name.as_str()), header))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_in_two_tiers_is_refused() {
        let section = |users: &[&str]| TierSection {
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            ..TierSection::default()
        };
        let tiers = BTreeMap::from([
            ("gold".to_owned(), section(&["alice"])),
            ("silver".to_owned(), section(&["bob", "alice"])),
        ]);
        let error = tier_of_users(&tiers).expect_err("alice twice");
        assert!(
            error.contains("tier.silver.users") && error.contains("alice"),
            "{error}"
        );
        let tiers = BTreeMap::from([("gold".to_owned(), section(&["alice"]))]);
        assert_eq!(
            tier_of_users(&tiers).expect("valid")["alice"].as_ref(),
            "gold"
        );
    }

    #[test]
    fn a_dimension_header_must_be_a_header_name() {
        let dims = BTreeMap::from([(
            "merchant".to_owned(),
            DimensionSection {
                header: "Merchant Id".to_owned(),
            },
        )]);
        let error = dimension_headers(&dims).expect_err("a space");
        assert!(error.starts_with("dimension.merchant.header"), "{error}");
    }
}
