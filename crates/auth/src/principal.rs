//! Who a verified token speaks for and what it may do.

use std::collections::BTreeSet;
use uuid::Uuid;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every read.
    Reader,
    /// Every read and every change.
    Admin,
}

impl Role {
    /// The role's name in problems and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Which tenants a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantAccess {
    /// Every tenant (no tenant claim is configured).
    All,
    /// Only these (the token's tenant claim).
    Only(BTreeSet<Uuid>),
}

/// The caller of a request, from its verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, for the audit log and runs: a user's name, `app:<client id>`, or the subject.
    pub subject: String,
    /// The strongest role the token grants.
    pub role: Role,
    /// The tenants it may see.
    pub tenants: TenantAccess,
}

impl Principal {
    /// Whether the caller may see `tenant`.
    pub fn may_access(&self, tenant: Uuid) -> bool {
        match &self.tenants {
            TenantAccess::All => true,
            TenantAccess::Only(tenants) => tenants.contains(&tenant),
        }
    }

    /// Whether the caller has at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }
}
