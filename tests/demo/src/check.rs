//! The convergence check: every card in PostgreSQL against the graph-sim snapshot mapped through
//! the tenant's field rules (the same `cardsync_rules::map_user` the delta-worker uses).

use cardsync_rules::{DirectoryUser, FieldRules, map_user};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// The outcome of one comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// Users in the directory snapshot (soft-deleted included).
    pub users: usize,
    /// Users that should have an active card.
    pub expected_active: usize,
    /// Cards whose status or fields disagree with the directory.
    pub divergent: usize,
    /// Of those, cards whose only difference is the photo (found by the budgeted photo scan).
    pub photo_only: usize,
    /// Directory users or emails held by more than one live card.
    pub duplicates: usize,
    /// Cards by status.
    pub statuses: BTreeMap<String, usize>,
    /// A few examples of what diverged, for the summary.
    pub examples: Vec<String>,
    /// Every directory user whose card diverges for more than its photo (the soak tells a
    /// change still in flight from a lost one by the user's last change).
    pub divergent_users: Vec<String>,
    /// Users outside the tenant's group scope (0 for a tenant that syncs every user).
    pub out_of_scope: usize,
}

struct CardRow {
    user_id: Option<String>,
    status: String,
    fields: Value,
    /// The stored image the card names.
    photo_sha256: Option<String>,
}

fn card_value<'a>(fields: &'a Value, field: &str) -> Option<&'a str> {
    fields
        .get(field)
        .and_then(|state| state.get("value"))
        .and_then(Value::as_str)
}

/// Compares every card of `tenant` with `snapshot` (graph-sim's `/snapshot` answer).
pub async fn compare(pool: &PgPool, tenant: Uuid, snapshot: &Value) -> anyhow::Result<Report> {
    let rules: Option<Value> = sqlx::query_scalar("SELECT rules FROM tenants WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    let rules: FieldRules = rules
        .and_then(|rules| serde_json::from_value(rules).ok())
        .unwrap_or_default();
    let scope = cardsync_store::directory::scope(pool, tenant).await?;
    let in_scope = scope.map(|groups| members_of(snapshot, &groups));
    let rows: Vec<(Option<String>, String, Value, Option<String>)> = sqlx::query_as(
        "SELECT user_id, status, fields, photo_sha256 FROM cards WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut report = Report::default();
    let mut cards: HashMap<String, CardRow> = HashMap::new();
    for (user_id, status, fields, photo_sha256) in rows {
        *report.statuses.entry(status.clone()).or_default() += 1;
        let row = CardRow {
            user_id: user_id.clone(),
            status,
            fields,
            photo_sha256,
        };
        match user_id {
            Some(user_id) => {
                cards.insert(user_id, row);
            }
            None if row.status == "active" => {
                report.divergent += 1;
                report.examples.push("an active card without a user".into());
            }
            None => {}
        }
    }
    report.duplicates = sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(sum(n - 1), 0)::bigint FROM (
             SELECT count(*) AS n FROM cards WHERE tenant_id = $1 AND status <> 'deleted'
              GROUP BY lower(coalesce(email, card_id::text)) HAVING count(*) > 1) d",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?
    .try_into()
    .unwrap_or(usize::MAX);

    let mut seen = HashSet::new();
    for user in snapshot["directory"]["users"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(id) = user["id"].as_str() else {
            continue;
        };
        report.users += 1;
        seen.insert(id.to_owned());
        let active = user["lifecycleState"]
            .as_str()
            .is_none_or(|s| s == "active")
            && user["accountEnabled"] != Value::Bool(false);
        let scoped = in_scope.as_ref().is_none_or(|members| members.contains(id));
        if !scoped {
            report.out_of_scope += 1;
        }
        let card = cards.get(id);
        if !active || !scoped {
            if card.is_some_and(|c| c.status == "active") {
                report.divergent += 1;
                report.divergent_users.push(id.to_owned());
                let why = if active { "out of scope" } else { "not active" };
                push_example(&mut report, format!("{id}: card active, user {why}"));
            }
            continue;
        }
        report.expected_active += 1;
        let Some(card) = card.filter(|c| c.status == "active") else {
            report.divergent += 1;
            report.divergent_users.push(id.to_owned());
            let status = card.map_or("none", |c| c.status.as_str());
            push_example(&mut report, format!("{id}: user active, card {status}"));
            continue;
        };
        let mut mapped = match DirectoryUser::from_graph(user)
            .map_err(anyhow::Error::from)
            .and_then(|u| map_user(&rules, &u).map_err(anyhow::Error::from))
        {
            Ok(mapped) => mapped,
            Err(error) => {
                push_example(&mut report, format!("{id}: cannot map: {error}"));
                continue;
            }
        };
        let photo_etag = user["photo"]["etag"]
            .as_str()
            .filter(|etag| !etag.trim().is_empty())
            .map(str::to_owned);
        mapped.set_photo(photo_etag.clone());
        let mut differences = Vec::new();
        // A card that names the directory's photo version must name a stored image too (and
        // none once the photo is gone): the version alone is not the photo.
        if card_value(&card.fields, "photo") == photo_etag.as_deref()
            && photo_etag.is_some() != card.photo_sha256.is_some()
        {
            differences.push(format!(
                "photo: card names image {:?} for directory photo {:?}",
                card.photo_sha256, photo_etag
            ));
        }
        for (field, value) in &mapped.fields {
            let have = card_value(&card.fields, field.as_str());
            if have != value.as_deref() {
                differences.push(format!(
                    "{}: card {:?}, directory {:?}",
                    field.as_str(),
                    have,
                    value
                ));
            }
        }
        if !differences.is_empty() {
            report.divergent += 1;
            if differences.len() == 1 && differences[0].starts_with("photo:") {
                report.photo_only += 1;
            } else {
                report.divergent_users.push(id.to_owned());
            }
            push_example(&mut report, format!("{id}: {}", differences.join("; ")));
        }
    }
    for (user_id, card) in &cards {
        if !seen.contains(user_id) && card.status == "active" {
            report.divergent += 1;
            report.divergent_users.push(user_id.clone());
            let who = card.user_id.as_deref().unwrap_or("?");
            push_example(&mut report, format!("{who}: purged user, card active"));
        }
    }
    Ok(report)
}

/// The users that are members of `groups` in `snapshot`, directly or through nested groups
/// (how a group-scoped tenant's scope is read).
pub fn members_of(snapshot: &Value, groups: &[String]) -> HashSet<String> {
    let mut members_by_group: HashMap<&str, Vec<&str>> = HashMap::new();
    for group in snapshot["directory"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if group["lifecycleState"]
            .as_str()
            .is_some_and(|s| s != "active")
        {
            continue;
        }
        if let Some(id) = group["id"].as_str() {
            let members = group["members"].as_array().into_iter().flatten();
            members_by_group.insert(id, members.filter_map(Value::as_str).collect());
        }
    }
    let mut users = HashSet::new();
    let mut visited: HashSet<&str> = HashSet::new();
    let mut pending: Vec<&str> = groups.iter().map(String::as_str).collect();
    while let Some(group) = pending.pop() {
        if !visited.insert(group) {
            continue;
        }
        for member in members_by_group.get(group).into_iter().flatten() {
            if members_by_group.contains_key(member) {
                pending.push(member);
            } else {
                users.insert((*member).to_owned());
            }
        }
    }
    users
}

fn push_example(report: &mut Report, example: String) {
    if report.examples.len() < 8 {
        report.examples.push(example);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scope_holds_the_members_of_its_groups_and_of_their_nested_groups_only() {
        let snapshot = json!({"directory": {"groups": [
            {"id": "sales", "lifecycleState": "active", "members": ["ann", "emea"]},
            {"id": "emea", "lifecycleState": "active", "members": ["bob", "sales"]},
            {"id": "legal", "lifecycleState": "active", "members": ["carol"]},
            {"id": "gone", "lifecycleState": "softDeleted", "members": ["dave"]},
        ]}});
        let members = members_of(&snapshot, &["sales".to_owned()]);
        let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["ann", "bob"]);
        assert!(members_of(&snapshot, &["legal".to_owned(), "gone".to_owned()]).contains("carol"));
        assert!(!members_of(&snapshot, &["gone".to_owned()]).contains("dave"));
    }
}
