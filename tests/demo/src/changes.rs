//! The random stream of directory changes the demo applies in graph-sim, and what it remembers
//! about each one (kind, user, the simulator's `changedAtUnixMs`) to measure end-to-end latency.

use anyhow::Context as _;
use graph_sim::control_client::Control;
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One applied change.
#[derive(Debug, Clone)]
pub struct Applied {
    /// What kind of change it was.
    pub kind: &'static str,
    /// The user it touched.
    pub user: String,
    /// graph-sim's `change.changedAtUnixMs`.
    pub changed_at_ms: i64,
    /// Whether the change must show on the card (a photo is detected by a budgeted scan, a
    /// membership move changes nothing while the tenant syncs every user).
    pub visible: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Enabled,
    Disabled,
    SoftDeleted,
}

/// The demo's picture of the directory: who can be changed how.
#[derive(Debug)]
pub struct Model {
    tenant: String,
    domain: String,
    users: BTreeMap<String, State>,
    departments: Vec<String>,
    member_of: BTreeMap<String, String>,
    /// Current job title and whether a mobile number is set, per user: a change the demo makes
    /// always changes what the card shows, or its latency would be measured to a later change.
    titles: BTreeMap<String, String>,
    with_mobile: BTreeMap<String, bool>,
    counter: u64,
    /// Whether new users join (as often as users are deleted for good).
    arrivals: bool,
}

const JOB_TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Product Manager",
    "Designer",
    "Sales Lead",
    "Account Executive",
    "Support Specialist",
    "Data Scientist",
];

impl Model {
    /// Builds the model from a graph-sim snapshot.
    pub fn from_snapshot(tenant: &str, snapshot: &Value) -> Self {
        let directory = &snapshot["directory"];
        let mut users = BTreeMap::new();
        let mut titles = BTreeMap::new();
        let mut with_mobile = BTreeMap::new();
        let mut domain = "example.com".to_owned();
        for user in directory["users"].as_array().into_iter().flatten() {
            let Some(id) = user["id"].as_str() else {
                continue;
            };
            if let Some(upn) = user["userPrincipalName"].as_str()
                && let Some((_, d)) = upn.split_once('@')
            {
                d.clone_into(&mut domain);
            }
            let state = if user["lifecycleState"]
                .as_str()
                .is_some_and(|s| s != "active")
            {
                State::SoftDeleted
            } else if user["accountEnabled"] == json!(false) {
                State::Disabled
            } else {
                State::Enabled
            };
            users.insert(id.to_owned(), state);
            titles.insert(
                id.to_owned(),
                user["jobTitle"].as_str().unwrap_or_default().to_owned(),
            );
            with_mobile.insert(id.to_owned(), user["mobilePhone"].is_string());
        }
        let mut departments = Vec::new();
        let mut member_of = BTreeMap::new();
        for group in directory["groups"].as_array().into_iter().flatten() {
            let name = group["displayName"].as_str().unwrap_or_default();
            let Some(id) = group["id"].as_str() else {
                continue;
            };
            if name.starts_with("Dept ") {
                departments.push(id.to_owned());
                for member in group["members"].as_array().into_iter().flatten() {
                    if let Some(member) = member.as_str() {
                        member_of.insert(member.to_owned(), id.to_owned());
                    }
                }
            }
        }
        Self {
            tenant: tenant.to_owned(),
            domain,
            users,
            departments,
            member_of,
            titles,
            with_mobile,
            counter: 0,
            arrivals: false,
        }
    }

    /// Lets the stream create users too, as often as it deletes them for good, so that a stream
    /// of hours never runs out of users to change.
    #[must_use]
    pub fn with_arrivals(mut self) -> Self {
        self.arrivals = true;
        self
    }

    fn pick(&self, rng: &mut impl rand::Rng, state: State) -> Option<String> {
        let ids: Vec<&String> = self
            .users
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(id, _)| id)
            .collect();
        ids.choose(rng).map(|id| (*id).clone())
    }

    /// Applies one random change; `None` when the chosen kind had no candidate this time.
    pub async fn apply_one(
        &mut self,
        control: &Control,
        rng: &mut rand::rngs::StdRng,
    ) -> anyhow::Result<Option<Applied>> {
        // Weights: mostly profile edits, with every lifecycle transition represented.
        let mut kinds: Vec<(&'static str, u32)> = vec![
            ("title", 30),
            ("phone", 15),
            ("email", 10),
            ("disable", 6),
            ("enable", 5),
            ("soft_delete", 5),
            ("restore", 5),
            ("permanent_delete", 2),
            ("membership_move", 12),
            ("photo", 10),
        ];
        if self.arrivals {
            kinds.push(("create", 2));
        }
        let kind = kinds
            .choose_weighted(rng, |(_, w)| *w)
            .map(|(k, _)| *k)
            .unwrap_or("title");
        self.counter += 1;
        let tenant = self.tenant.clone();
        let (user, answer, visible) = match kind {
            "title" | "phone" | "email" | "disable" => {
                let Some(user) = self.pick(rng, State::Enabled) else {
                    return Ok(None);
                };
                let current_title = self.titles.get(&user).cloned().unwrap_or_default();
                let has_mobile = self.with_mobile.get(&user).copied().unwrap_or(false);
                let body = match kind {
                    "title" => {
                        let others: Vec<&str> = JOB_TITLES
                            .iter()
                            .copied()
                            .filter(|t| *t != current_title)
                            .collect();
                        let title = others.choose(rng).copied().unwrap_or("Engineer");
                        self.titles.insert(user.clone(), title.to_owned());
                        json!({"jobTitle": title})
                    }
                    "phone" if has_mobile && rng.random_bool(0.2) => {
                        self.with_mobile.insert(user.clone(), false);
                        json!({"mobilePhone": null})
                    }
                    "phone" => {
                        self.with_mobile.insert(user.clone(), true);
                        // The counter keeps every new number different from the last one.
                        json!({"mobilePhone": format!("+1 206 555 {:04}", self.counter % 10_000)})
                    }
                    // Fresh, unique addresses: a real directory never gives one address to two
                    // people, and the card-writer rightly refuses to take one over.
                    "email" => {
                        json!({"mail": format!("demo{}.{}@{}", self.counter, &user[..8], self.domain)})
                    }
                    _ => json!({"accountEnabled": false}),
                };
                let answer = control.update_user(&tenant, &user, body).await?;
                if kind == "disable" {
                    self.users.insert(user.clone(), State::Disabled);
                }
                (user, answer, true)
            }
            "enable" => {
                let Some(user) = self.pick(rng, State::Disabled) else {
                    return Ok(None);
                };
                let answer = control
                    .update_user(&tenant, &user, json!({"accountEnabled": true}))
                    .await?;
                self.users.insert(user.clone(), State::Enabled);
                (user, answer, true)
            }
            "soft_delete" => {
                let Some(user) = self.pick(rng, State::Enabled) else {
                    return Ok(None);
                };
                let answer = control.delete_user(&tenant, &user, false).await?;
                self.users.insert(user.clone(), State::SoftDeleted);
                (user, answer, true)
            }
            "restore" => {
                let Some(user) = self.pick(rng, State::SoftDeleted) else {
                    return Ok(None);
                };
                let answer = control.restore_user(&tenant, &user).await?;
                self.users.insert(user.clone(), State::Enabled);
                (user, answer, true)
            }
            "permanent_delete" => {
                let Some(user) = self.pick(rng, State::Enabled) else {
                    return Ok(None);
                };
                let answer = control.delete_user(&tenant, &user, true).await?;
                self.users.remove(&user);
                self.member_of.remove(&user);
                (user, answer, true)
            }
            "create" => {
                let title = JOB_TITLES.choose(rng).copied().unwrap_or("Engineer");
                // Random as well as counted: several models may change one tenant.
                let alias = format!(
                    "newcomer{}.{:08x}.{}",
                    self.counter,
                    rng.random::<u32>(),
                    &tenant[..8]
                );
                let answer = control
                    .create_user(
                        &tenant,
                        json!({
                            "displayName": format!("Newcomer {}", self.counter),
                            "userPrincipalName": format!("{alias}@{}", self.domain),
                            "mail": format!("{alias}@{}", self.domain),
                            "jobTitle": title,
                            "accountEnabled": true,
                        }),
                    )
                    .await?;
                let user = answer["user"]["id"]
                    .as_str()
                    .or(answer["id"].as_str())
                    .context("graph-sim created a user without an id")?
                    .to_owned();
                self.users.insert(user.clone(), State::Enabled);
                self.titles.insert(user.clone(), title.to_owned());
                self.with_mobile.insert(user.clone(), false);
                (user, answer, true)
            }
            "membership_move" => {
                let Some(user) = self.pick(rng, State::Enabled) else {
                    return Ok(None);
                };
                let Some(to) = self.departments.choose(rng).cloned() else {
                    return Ok(None);
                };
                if let Some(from) = self.member_of.get(&user).cloned() {
                    if from == to {
                        return Ok(None);
                    }
                    control.remove_member(&tenant, &from, &user).await?;
                }
                let answer = control.add_member(&tenant, &to, &user).await?;
                self.member_of.insert(user.clone(), to);
                (user, answer, false)
            }
            _ => {
                let Some(user) = self.pick(rng, State::Enabled) else {
                    return Ok(None);
                };
                let bytes = photo_bytes(rng);
                control
                    .set_photo(&tenant, &user, bytes, "image/png")
                    .await?;
                // Photo changes answer without a change record: time them from now.
                let answer = json!({"change": {"changedAtUnixMs": now_ms()}});
                (user, answer, false)
            }
        };
        let changed_at_ms = answer["change"]["changedAtUnixMs"]
            .as_i64()
            .unwrap_or_else(now_ms);
        Ok(Some(Applied {
            kind,
            user,
            changed_at_ms,
            visible,
        }))
    }
}

impl Model {
    /// Every enabled user, in a stable order (the burst's targets).
    pub fn enabled_users(&self) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, state)| **state == State::Enabled)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A burst: one new job title for each of `users`, as fast as graph-sim takes them (`parallel`
/// requests at a time), e.g. a re-organisation imported in one go.
pub async fn title_burst(
    control: &Control,
    tenant: &str,
    users: &[String],
    parallel: usize,
) -> anyhow::Result<Vec<Applied>> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, user) in users.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let (control, tenant, user) = (control.clone(), tenant.to_owned(), user.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let title = format!("{} (burst {n})", JOB_TITLES[n % JOB_TITLES.len()]);
            let answer = control
                .update_user(&tenant, &user, json!({"jobTitle": title}))
                .await?;
            anyhow::Ok(Applied {
                kind: "title",
                changed_at_ms: answer["change"]["changedAtUnixMs"]
                    .as_i64()
                    .unwrap_or_else(now_ms),
                user,
                visible: true,
            })
        });
    }
    let mut applied = Vec::with_capacity(users.len());
    while let Some(done) = tasks.join_next().await {
        applied.push(done??);
    }
    Ok(applied)
}

/// A tiny, distinct PNG-ish payload (graph-sim derives the media etag from the bytes).
fn photo_bytes(rng: &mut impl rand::Rng) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..64).map(|_| rng.random::<u8>()));
    bytes
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or_default()
}
