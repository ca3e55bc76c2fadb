//! The unit of work: one transaction's picture of the cards of a batch of commands, and
//! everything the batch will write. It reads, under the users' locks, every card the batch may
//! need ([`Batch::read`]); holds each command's writes so the next command sees them; and writes
//! the cards, teams, memberships and the journal (audit and outbox rows) back with a statement
//! each ([`Batch::write`]), inside the caller's transaction.

use super::ApplyError;
use crate::command::{Action, ValidCommand};
use cardsync_cards::Journal;
use cardsync_store::cards::{self, Card, CardStatus};
use cardsync_store::teams;
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// What a card without a user may be linked by.
#[derive(Debug, Clone, Copy)]
pub(super) enum LinkKey<'a> {
    /// The tenant's UID of the person.
    Uid(&'a str),
    /// The email, compared case-insensitively.
    Email(&'a str),
}

impl LinkKey<'_> {
    /// Whether `card` holds this key.
    fn held_by(self, card: &Card) -> bool {
        match self {
            LinkKey::Uid(uid) => card.uid.as_deref() == Some(uid),
            LinkKey::Email(email) => card
                .email
                .as_deref()
                .is_some_and(|held| held.to_lowercase() == email.to_lowercase()),
        }
    }
}

/// A card the batch wrote: its state after the batch's last command for it.
#[derive(Debug)]
struct Written {
    card: Card,
    /// Not in PostgreSQL before the batch (inserted at the end rather than updated).
    new: bool,
}

/// One transaction's picture of the cards and everything it will write.
///
/// What PostgreSQL held at the start is read once, under the users' locks ([`Batch::read`]);
/// every command's writes stay here until [`Batch::write`], and every look-up checks them
/// first, so each command sees exactly what it would see alone. A card the batch wrote is
/// never taken from the start-of-batch reads again: its written state is the truth (a card
/// linked to another user, or whose email changed, no longer matches what it matched then).
#[derive(Debug)]
pub(super) struct Batch {
    /// The commands' users' cards at the start, tombstones included.
    by_user: HashMap<(Uuid, String), Card>,
    /// Live cards holding a UID some command may link by, at the start.
    by_uid: HashMap<(Uuid, String), Card>,
    /// Live cards holding an email some command may link by (key: the email as the command
    /// gives it), at the start.
    by_email: HashMap<(Uuid, String), Card>,
    /// The UIDs the start-of-batch reads covered; any other is looked up alone.
    uids_read: HashSet<(Uuid, String)>,
    /// The emails the start-of-batch reads covered; any other is looked up alone.
    emails_read: HashSet<(Uuid, String)>,
    /// Cards written by the batch, in the order first written.
    written: Vec<Written>,
    /// Rows the batch removes (tombstones of people who are back), `(tenant, card)`.
    removed: Vec<(Uuid, Uuid)>,
    /// Memberships known exactly for cards the batch may touch (read at the start, kept
    /// current by its writes).
    teams: HashMap<Uuid, BTreeSet<String>>,
    /// Cards whose memberships the batch changed.
    teams_moved: BTreeSet<(Uuid, Uuid)>,
    /// Teams to make sure of, with the last known name.
    team_names: BTreeMap<(Uuid, String), Option<String>>,
    /// The audit rows and card events of the batch's changes, inserted together at the end.
    pub(super) journal: Journal,
}

impl Batch {
    /// An empty batch whose card events go to `exchange` (full name).
    pub(super) fn new(exchange: &str) -> Self {
        Self {
            by_user: HashMap::new(),
            by_uid: HashMap::new(),
            by_email: HashMap::new(),
            uids_read: HashSet::new(),
            emails_read: HashSet::new(),
            written: Vec::new(),
            removed: Vec::new(),
            teams: HashMap::new(),
            teams_moved: BTreeSet::new(),
            team_names: BTreeMap::new(),
            journal: Journal::new(exchange),
        }
    }

    /// Reads, under locks, what the commands of one tenant may need: their users' cards, the
    /// live cards they could link by UID or email, and the memberships of all of them.
    pub(super) async fn read(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        commands: &[&ValidCommand],
    ) -> Result<(), ApplyError> {
        let user_ids: Vec<&str> = commands.iter().map(|c| c.user_id.as_str()).collect();
        let mut card_ids = Vec::new();
        for card in cards::lock_by_users(conn, tenant_id, &user_ids).await? {
            card_ids.push(card.card_id);
            if let Some(user_id) = card.user_id.clone() {
                self.by_user.insert((tenant_id, user_id), card);
            }
        }
        // Only a user without a live card links one (a tombstone's user comes back as new).
        let linking: Vec<&ValidCommand> = commands
            .iter()
            .copied()
            .filter(|command| matches!(command.action, Action::Upsert | Action::Reactivate))
            .filter(|command| {
                self.by_user
                    .get(&(tenant_id, command.user_id.clone()))
                    .is_none_or(|card| card.status == CardStatus::Deleted)
            })
            .collect();
        let uids: Vec<&str> = linking.iter().filter_map(|c| c.uid.as_deref()).collect();
        if !uids.is_empty() {
            for card in cards::lock_by_uids(conn, tenant_id, &uids).await? {
                card_ids.push(card.card_id);
                if let Some(uid) = card.uid.clone() {
                    self.by_uid.insert((tenant_id, uid), card);
                }
            }
            self.uids_read
                .extend(uids.iter().map(|uid| (tenant_id, (*uid).to_owned())));
        }
        let emails: Vec<&str> = linking
            .iter()
            .filter_map(|c| c.incoming.link_email.as_deref())
            .collect();
        if !emails.is_empty() {
            for (email, card) in cards::lock_by_emails(conn, tenant_id, &emails).await? {
                card_ids.push(card.card_id);
                self.by_email.insert((tenant_id, email), card);
            }
            self.emails_read
                .extend(emails.iter().map(|email| (tenant_id, (*email).to_owned())));
        }
        card_ids.sort_unstable();
        card_ids.dedup();
        let mut teams = cards::teams_of_cards(&mut *conn, tenant_id, &card_ids).await?;
        for card_id in card_ids {
            self.teams
                .insert(card_id, teams.remove(&card_id).unwrap_or_default());
        }
        Ok(())
    }

    /// The batch's current state of every card it wrote.
    fn written_cards(&self) -> impl Iterator<Item = &Card> {
        self.written.iter().map(|written| &written.card)
    }

    /// Whether a start-of-batch read of this card is out of date.
    fn superseded(&self, card: &Card) -> bool {
        self.written_cards()
            .any(|written| written.card_id == card.card_id)
            || self.removed.contains(&(card.tenant_id, card.card_id))
    }

    /// The user's card as it stands now in the batch, tombstones included.
    pub(super) fn card_of_user(&self, tenant_id: Uuid, user_id: &str) -> Option<Card> {
        let written = self
            .written_cards()
            .find(|card| card.tenant_id == tenant_id && card.user_id.as_deref() == Some(user_id));
        if let Some(card) = written {
            return Some(card.clone());
        }
        self.by_user
            .get(&(tenant_id, user_id.to_owned()))
            .filter(|card| !self.superseded(card))
            .cloned()
    }

    /// The live card holding `key` as it stands now in the batch.
    pub(super) async fn card_by_link(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        key: LinkKey<'_>,
    ) -> Result<Option<Card>, ApplyError> {
        let written = self.written_cards().find(|card| {
            card.tenant_id == tenant_id && card.status != CardStatus::Deleted && key.held_by(card)
        });
        if let Some(card) = written {
            return Ok(Some(card.clone()));
        }
        let (read, found, text) = match key {
            LinkKey::Uid(uid) => (&self.uids_read, &self.by_uid, uid),
            LinkKey::Email(email) => (&self.emails_read, &self.by_email, email),
        };
        let map_key = (tenant_id, text.to_owned());
        let stored = if read.contains(&map_key) {
            found.get(&map_key).cloned()
        } else {
            let card = match key {
                LinkKey::Uid(uid) => cards::lock_by_uid(conn, tenant_id, uid).await?,
                LinkKey::Email(email) => cards::lock_by_email(conn, tenant_id, email).await?,
            };
            self.learn_teams(conn, card.as_ref()).await?;
            card
        };
        Ok(stored.filter(|card| !self.superseded(card)))
    }

    /// Reads the memberships of a card found outside the start-of-batch reads.
    async fn learn_teams(
        &mut self,
        conn: &mut PgConnection,
        card: Option<&Card>,
    ) -> Result<(), ApplyError> {
        if let Some(card) = card
            && !self.teams.contains_key(&card.card_id)
        {
            let mut teams = cards::teams_of_cards(conn, card.tenant_id, &[card.card_id]).await?;
            self.teams.insert(
                card.card_id,
                teams.remove(&card.card_id).unwrap_or_default(),
            );
        }
        Ok(())
    }

    /// Records the card's new state (`new`: not stored before the batch).
    pub(super) fn put(&mut self, card: Card, new: bool) {
        match self
            .written
            .iter_mut()
            .find(|written| written.card.card_id == card.card_id)
        {
            Some(written) => written.card = card,
            None => self.written.push(Written { card, new }),
        }
    }

    /// Removes a card for good.
    pub(super) fn remove(&mut self, tenant_id: Uuid, card_id: Uuid) {
        let stored = match self
            .written
            .iter()
            .position(|written| written.card.card_id == card_id)
        {
            Some(index) => !self.written.remove(index).new,
            None => true,
        };
        // A card the batch itself made is simply never inserted.
        if stored {
            self.removed.push((tenant_id, card_id));
        }
        self.teams.remove(&card_id);
        self.teams_moved.remove(&(tenant_id, card_id));
    }

    /// Makes the card's memberships `wanted` (written at the end only if they moved).
    pub(super) fn set_teams(&mut self, tenant_id: Uuid, card_id: Uuid, wanted: BTreeSet<String>) {
        let current = self.teams.entry(card_id).or_default();
        if *current != wanted {
            *current = wanted;
            self.teams_moved.insert((tenant_id, card_id));
        }
    }

    /// The card's memberships as the batch stands (`None`: none known, as for a new card).
    pub(super) fn teams_of(&self, card_id: Uuid) -> Option<&BTreeSet<String>> {
        self.teams.get(&card_id)
    }

    /// Makes sure every team `command` names exists; a known name names a team that has none
    /// (renames come from the rounds, `teams::follow_groups`).
    pub(super) fn ensure_teams(&mut self, command: &ValidCommand) {
        for group_id in &command.team_ids {
            let name = command.team_names.get(group_id).map(String::as_str);
            self.ensure_team(command.tenant_id, group_id, name);
        }
        for (group_id, name) in &command.team_names {
            self.ensure_team(command.tenant_id, group_id, Some(name));
        }
    }

    /// Makes sure a team exists; the first known name of the batch is the one offered, as
    /// applying the commands one by one would keep it.
    fn ensure_team(&mut self, tenant_id: Uuid, group_id: &str, name: Option<&str>) {
        let entry = self
            .team_names
            .entry((tenant_id, group_id.to_owned()))
            .or_default();
        if entry.is_none() {
            *entry = name.map(str::to_owned);
        }
    }

    /// Writes everything the batch decided, one statement per kind of row, then its journal.
    /// The order keeps the unique indexes satisfied: removed tombstones first (their users come
    /// back as new cards), then updated cards (emails and UIDs they let go of), then new cards;
    /// teams before the memberships that reference them.
    pub(super) async fn write(self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        cards::remove_all(conn, &self.removed).await?;
        let (new, stored): (Vec<&Written>, Vec<&Written>) =
            self.written.iter().partition(|written| written.new);
        let stored: Vec<&Card> = stored.iter().map(|written| &written.card).collect();
        cards::update_all(conn, &stored).await?;
        let new: Vec<&Card> = new.iter().map(|written| &written.card).collect();
        cards::insert_all(conn, &new).await?;
        let teams: Vec<(Uuid, &str, Option<&str>)> = self
            .team_names
            .iter()
            .map(|((tenant_id, group_id), name)| (*tenant_id, group_id.as_str(), name.as_deref()))
            .collect();
        teams::upsert_all(conn, &teams).await?;
        let none = BTreeSet::new();
        let memberships: Vec<cards::Memberships<'_>> = self
            .teams_moved
            .iter()
            .map(|(tenant_id, card_id)| cards::Memberships {
                tenant_id: *tenant_id,
                card_id: *card_id,
                group_ids: self.teams.get(card_id).unwrap_or(&none),
            })
            .collect();
        cards::set_teams_all(conn, &memberships).await?;
        self.journal.write(conn).await?;
        Ok(())
    }
}
