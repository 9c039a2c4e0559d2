//! [`Rules`]: which answers are retried and which requests may be repeated.

use std::time::SystemTime;

use http::{HeaderName, Method, StatusCode};
use tollgate_retry::budget::Cause;
use tollgate_retry::config::RetryConfig;
use tollgate_retry::retry::Attempt;

use crate::Error;

/// What is retried and when a request must carry an idempotency key, as a server publishes
/// them in its [`RetryConfig`].
#[derive(Clone, Debug)]
pub struct Rules {
    statuses: Vec<StatusCode>,
    in_progress_conflicts: bool,
    key_header: HeaderName,
    key_methods: Vec<Method>,
}

impl Default for Rules {
    /// [`RetryConfig::default`]'s rules: 408, 429, 500, 502, 503 and 504 retried, and a 409
    /// with `Retry-After` (the same key still in progress); `POST` and `PATCH` given an
    /// `Idempotency-Key`.
    fn default() -> Self {
        Rules::from_config(&RetryConfig::default())
            .expect("the default retry configuration is valid")
    }
}

impl Rules {
    /// The rules `config` describes; an invalid status, header or method name is an error
    /// naming the field.
    pub fn from_config(config: &RetryConfig) -> Result<Self, Error> {
        let invalid = |field: &str| {
            Error::Policy(tollgate_retry::Error::InvalidConfig(format!(
                "`{field}` holds an invalid value"
            )))
        };
        let statuses = config
            .retryable_statuses
            .iter()
            .map(|&status| StatusCode::from_u16(status))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid("retryable_statuses"))?;
        let key_header = HeaderName::try_from(config.idempotency_key_header.as_str())
            .map_err(|_| invalid("idempotency_key_header"))?;
        let key_methods = config
            .require_idempotency_key_for
            .iter()
            .map(|method| Method::from_bytes(method.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid("require_idempotency_key_for"))?;
        Ok(Rules {
            statuses,
            in_progress_conflicts: config.retry_in_progress_conflicts,
            key_header,
            key_methods,
        })
    }

    /// The idempotency key's header.
    pub fn key_header(&self) -> &HeaderName {
        &self.key_header
    }

    /// Whether requests with this method are given a key (and retried only with one).
    pub fn needs_key(&self, method: &Method) -> bool {
        self.key_methods.contains(method)
    }

    /// Whether a request may be sent more than once: its method is idempotent, or it carries a
    /// key.
    pub fn may_repeat(&self, method: &Method, headers: &http::HeaderMap) -> bool {
        (method.is_idempotent() && !self.needs_key(method))
            || headers.contains_key(&self.key_header)
    }

    /// What an attempt's result asks for. Transport failures (connecting, sending, reading the
    /// answer, timeouts) are retried; a refusal by a middleware, a bad URL or a redirect loop
    /// is final; so is every status the rules do not name (above all 400, 401, 403, 404, 422).
    pub fn attempt(&self, result: &reqwest_middleware::Result<reqwest::Response>) -> Attempt {
        match result {
            Ok(response) => self.for_response(response),
            Err(reqwest_middleware::Error::Reqwest(error)) if error.is_timeout() => {
                Attempt::Retry {
                    after: None,
                    cause: Cause::Timeout,
                }
            }
            Err(reqwest_middleware::Error::Reqwest(error))
                if error.is_connect() || error.is_request() || error.is_body() =>
            {
                Attempt::retry()
            }
            Err(_) => Attempt::Done,
        }
    }

    fn for_response(&self, response: &reqwest::Response) -> Attempt {
        let after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| tollgate_retry::retry_after::parse(value, SystemTime::now()).ok());
        let status = response.status();
        let in_progress =
            self.in_progress_conflicts && status == StatusCode::CONFLICT && after.is_some();
        if self.statuses.contains(&status) || in_progress {
            Attempt::Retry {
                after,
                cause: Cause::Error,
            }
        } else {
            Attempt::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_default_configurations() {
        let rules = Rules::default();
        assert_eq!(rules.key_header().as_str(), "idempotency-key");
        assert!(rules.needs_key(&Method::POST) && rules.needs_key(&Method::PATCH));
        assert_eq!(rules.statuses.len(), 6);
    }

    #[test]
    fn posts_need_a_key_and_gets_do_not() {
        let rules = Rules::default();
        let none = http::HeaderMap::new();
        let mut keyed = http::HeaderMap::new();
        keyed.insert("idempotency-key", http::HeaderValue::from_static("k"));
        assert!(rules.may_repeat(&Method::GET, &none));
        assert!(rules.may_repeat(&Method::PUT, &none));
        assert!(!rules.may_repeat(&Method::POST, &none));
        assert!(!rules.may_repeat(&Method::PATCH, &none));
        assert!(rules.may_repeat(&Method::POST, &keyed));
    }

    #[test]
    fn invalid_published_values_name_their_field() {
        let mut config = RetryConfig::default();
        config.retryable_statuses = vec![42];
        let error = Rules::from_config(&config).expect_err("status 42");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("retryable_statuses")));

        let mut config = RetryConfig::default();
        config.idempotency_key_header = "no spaces".to_owned();
        assert!(Rules::from_config(&config).is_err());
    }
}
