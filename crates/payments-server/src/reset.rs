//! `payments-server limits reset`: a support desk gives a subject its full quota back, on every
//! replica. The counters live in the shared Redis (or Redis Cluster) the server uses; each
//! replica answers a remembered denial from memory for at most
//! [`REMEMBER_DENIALS_AT_MOST`], so all of them admit the subject again within that.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate_ratelimit::redis::RedisLimiter;
use tollgate_ratelimit::{PolicyKey, PolicySet, RateLimiter, RequestContext, Scope};

use crate::config::Config;

/// How long a replica answers a remembered denial without asking Redis, at most: how long a
/// reset (or another replica's refund) takes to reach it.
pub(crate) const REMEMBER_DENIALS_AT_MOST: Duration = Duration::from_secs(1);

/// What `payments-server limits` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum LimitsCommand {
    /// Gives a subject its full quota back under every policy that counts it, in every tier:
    /// a user, an address, or a custom dimension's value. Needs the shared Redis.
    Reset {
        /// A user's quotas.
        #[arg(long)]
        user: Option<String>,
        /// An address's quotas (an IPv6 address stands for its /64).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// A dimension's value, as `dimension=value` (`merchant=m_42`).
        #[arg(long, value_parser = dimension)]
        dimension: Option<(String, String)>,
    },
}

fn dimension(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("write it as dimension=value")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The key prefix of the server's rate-limit counters in Redis.
pub(crate) fn key_prefix(config: &Config) -> String {
    format!("{}:rl:", config.redis_key_prefix)
}

/// Runs `command`: what it prints.
pub async fn run(config: &Config, command: &LimitsCommand) -> Result<Vec<String>, String> {
    let LimitsCommand::Reset {
        user,
        ip,
        dimension,
    } = command;
    let file = config.file()?;
    let redis = crate::pools::redis(config, &file.redis)
        .await
        .map_err(|e| e.to_string())?
        .ok_or(
            "no REDIS_URL or REDIS_CLUSTER_URLS: the counters are in each server's memory, \
             which only a restart clears",
        )?;
    let dims: Vec<(&str, &str)> = dimension
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut ctx = RequestContext::new().dimensions(&dims);
    let (described, scope) = match (user, ip, dimension) {
        (Some(user), None, None) => {
            ctx = ctx.user(user);
            (format!("user {user}"), Scope::User)
        }
        (None, Some(ip), None) => {
            ctx = ctx.ip(*ip);
            (format!("address {ip}"), Scope::Ip)
        }
        (None, None, Some((name, value))) => (format!("{name} {value}"), Scope::Dimension),
        _ => return Err("name one subject: --user, --ip or --dimension".to_owned()),
    };
    let keys = keys_of(&file.policy_set()?, scope, &ctx);
    if keys.is_empty() {
        return Err(format!("no policy counts {described}"));
    }
    let limiter = RedisLimiter::builder(redis)
        .key_prefix(key_prefix(config))
        .build();
    limiter
        .reset(&keys)
        .await
        .map_err(|e| format!("the rate limiter: {}", crate::error_chain(&e)))?;
    let names: Vec<_> = keys.iter().map(|k| k.policy().name()).collect();
    Ok(vec![format!(
        "reset {described} under {}: every replica admits it again within {}s",
        names.join(", "),
        REMEMBER_DENIALS_AT_MOST.as_secs()
    )])
}

/// The keys of `ctx` under every policy of `scope` in every tier (shadow ones included), each
/// counter once: tiers that re-limit a policy share its counters.
fn keys_of(policies: &PolicySet, scope: Scope, ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
    let tiers = policies.tiers().map(Some).chain([None]);
    let mut keys = BTreeMap::new();
    for policy in tiers.flat_map(|tier| policies.policies_for(tier)) {
        let ctx = policy
            .endpoint()
            .map_or(*ctx, |endpoint| ctx.endpoint(endpoint));
        if policy.scope() == scope
            && let Some(key) = policy.key_for(&ctx)
        {
            keys.entry(key.storage_key().to_owned()).or_insert(key);
        }
    }
    keys.into_values().collect()
}
