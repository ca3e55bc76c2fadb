//! Refusals counted by reason: `{prefix}_auth_refusals_total{reason}`, every reason created at 0
//! so an alert on one of them has a series before the first refusal. The reason is
//! [`AuthError::code`]: never the token, the caller or the key.

use crate::verify::AuthError;
use cardsync_telemetry::metrics::{IntCounterVec, MetricsError, Opts, Registry, register};

/// The refusal counter an API registers and hands to [`crate::middleware::authenticate`] as
/// `web::Data<AuthMetrics>`.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    refusals: IntCounterVec,
}

impl AuthMetrics {
    /// Registers `{prefix}_auth_refusals_total` on `registry`.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, MetricsError> {
        let refusals = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    format!("{prefix}_auth_refusals_total"),
                    "Requests refused by authentication or authorisation, by reason",
                ),
                &["reason"],
            )?,
        )?;
        for reason in AuthError::CODES {
            refusals.with_label_values(&[reason]);
        }
        Ok(Self { refusals })
    }

    /// Counts one refusal.
    pub fn refused(&self, error: &AuthError) {
        self.refusals.with_label_values(&[error.code()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_series_before_its_first_refusal_and_counts_apart() {
        let registry = Registry::new();
        let metrics = AuthMetrics::register(&registry, "test_api").unwrap();
        metrics.refused(&AuthError::Expired);
        metrics.refused(&AuthError::Expired);
        metrics.refused(&AuthError::MissingClaim("sub".into()));
        let families = registry.gather();
        let family = families
            .iter()
            .find(|family| family.name() == "test_api_auth_refusals_total")
            .expect("the family is registered");
        let counts: Vec<(String, f64)> = family
            .get_metric()
            .iter()
            .map(|metric| {
                (
                    metric.get_label()[0].value().to_owned(),
                    metric.get_counter().get_value(),
                )
            })
            .collect();
        assert_eq!(counts.len(), AuthError::CODES.len());
        assert!(counts.contains(&("token-expired".to_owned(), 2.0)));
        assert!(counts.contains(&("token-claim-missing".to_owned(), 1.0)));
        assert!(counts.contains(&("token-signature".to_owned(), 0.0)));
    }
}
