//! Scoping: the group scope resolved over the snapshot's groups and the user filter applied to
//! the snapshot's users, so a changed scope or filter re-places everyone on the next round.

use super::{Mode, Round, RoundError, RoundRequest, Rounds};
use crate::snapshot::{self, Scope};
use cardsync_store::directory::{self, UserRow};
use time::OffsetDateTime;

impl Rounds {
    /// Resolves the scope's groups (after the groups delta, unless the round applies rules from
    /// the snapshot) and re-places every user of the snapshot whose scope or teams moved.
    pub(super) async fn scope_pass(
        &self,
        round: &mut Round<'_>,
        request: &RoundRequest,
        scope_groups: Option<&[String]>,
        full: bool,
    ) -> Result<(), RoundError> {
        if let Some(groups) = scope_groups {
            // An apply works from the snapshot: the groups are as the last round left them.
            if request.mode != Mode::Apply {
                self.groups_pass(round, full).await?;
            }
            round.scope =
                Scope::resolve(groups, &directory::groups(&self.pool, round.tenant).await?);
        }
        // A filter reading a property the stored delta does not select would see nothing of it
        // and leave everyone out: enumerate with the new `$select` first (a full round's own
        // users pass does, placing everyone as it goes).
        let mut filter_readable = true;
        if let Some(filter) = &round.filter {
            let selected = directory::users_select(&self.pool, round.tenant)
                .await?
                .unwrap_or_default();
            if !crate::select::holds_all(&selected, &filter.properties()) {
                if full {
                    filter_readable = false;
                } else {
                    self.users_pass(round, true).await?;
                }
            }
        }
        // Re-place every user of the snapshot when the scope or the filter may have moved
        // someone: a group scope or a filter, or users left out by one that no longer is.
        let rescoping = filter_readable
            && (scope_groups.is_some()
                || round.filter.is_some()
                || directory::has_users_out_of_scope(&self.pool, round.tenant).await?);
        if rescoping {
            let now = OffsetDateTime::now_utc();
            let moved: Vec<UserRow> = directory::all_users(&self.pool, round.tenant)
                .await?
                .iter()
                .filter_map(|row| snapshot::rescope(row, &round.scope, round.filter.as_ref(), now))
                .collect();
            round.report.changed += moved.len() as u64;
            self.save_and_emit(round, moved).await?;
        }
        Ok(())
    }
}
