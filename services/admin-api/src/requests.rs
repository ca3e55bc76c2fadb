//! The request bodies the API reads, parsed and checked by the handlers' own code, without a
//! server or a database: what a route does with a body before it needs either. The fuzz targets
//! (tests/fuzz) drive every body through here; a refusal is the problem the route answers.

use crate::error::ApiError;
use crate::routes::{
    cards, connections, json_body, optional_body, schedules, scope, subscriptions, sync, tenants,
};
use cardsync_runtime::Problem;
use cardsync_schedule::Spec;

/// A request body, by the route that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `POST /v1/tenants`.
    TenantCreate,
    /// `PATCH /v1/tenants/{tenant}`.
    TenantPatch,
    /// `PUT /v1/tenants/{tenant}/connection`.
    ConnectionPut,
    /// `PUT /v1/tenants/{tenant}/scope`.
    ScopePut,
    /// `PUT /v1/tenants/{tenant}/rules` and `POST …/rules/dry-run`.
    RulesPut,
    /// `PUT /v1/tenants/{tenant}/schedules/{target}`.
    SchedulePut,
    /// `PATCH /v1/tenants/{tenant}/schedules/{target}` (over the default schedule).
    SchedulePatch,
    /// `POST /v1/tenants/{tenant}/sync` (an optional body).
    SyncTenant,
    /// `POST /v1/tenants/{tenant}/users/{user}/sync` (an optional body).
    SyncUser,
    /// `POST /v1/tenants/{tenant}/subscriptions`.
    SubscriptionRegister,
    /// `POST /v1/tenants/{tenant}/subscriptions/recreate`.
    SubscriptionRecreate,
    /// `PUT /v1/tenants/{tenant}/cards/{card}/fields/{field}`.
    FieldEdit,
}

impl Body {
    /// Every body the API reads.
    pub const ALL: [Body; 12] = [
        Body::TenantCreate,
        Body::TenantPatch,
        Body::ConnectionPut,
        Body::ScopePut,
        Body::RulesPut,
        Body::SchedulePut,
        Body::SchedulePatch,
        Body::SyncTenant,
        Body::SyncUser,
        Body::SubscriptionRegister,
        Body::SubscriptionRecreate,
        Body::FieldEdit,
    ];

    /// Parses and checks `bytes` as this route does; the refusal is the problem it answers.
    pub fn check(self, bytes: &[u8]) -> Result<(), Box<Problem>> {
        self.checked(bytes)
            .map_err(|error| Box::new(error.problem()))
    }

    fn checked(self, bytes: &[u8]) -> Result<(), ApiError> {
        match self {
            Body::TenantCreate => json_body::<tenants::NewTenant>(bytes)?.check(),
            Body::TenantPatch => json_body::<tenants::TenantPatch>(bytes)?.check(),
            Body::ConnectionPut => json_body::<connections::NewConnection>(bytes)?.check(),
            Body::ScopePut => json_body::<scope::Scope>(bytes)?.checked().map(drop),
            Body::RulesPut => tenants::check_rules(&json_body(bytes)?),
            Body::SchedulePut => {
                let spec = schedules::spec_of(&json_body(bytes)?)?;
                spec.check().map(drop).map_err(schedules::field_error)
            }
            Body::SchedulePatch => {
                let spec = schedules::merged(&Spec::nightly(), &json_body(bytes)?)?;
                spec.check().map(drop).map_err(schedules::field_error)
            }
            Body::SyncTenant => optional_body::<sync::SyncTenant>(bytes)?
                .unwrap_or_default()
                .checked_group()
                .map(drop),
            Body::SyncUser => optional_body::<sync::SyncUser>(bytes).map(drop),
            Body::SubscriptionRegister => json_body::<subscriptions::NewSubscription>(bytes)?
                .checked()
                .map(drop),
            Body::SubscriptionRecreate => {
                json_body::<subscriptions::RecreateRequest>(bytes).map(drop)
            }
            Body::FieldEdit => json_body::<cards::FieldEdit>(bytes)?.checked().map(drop),
        }
    }
}
