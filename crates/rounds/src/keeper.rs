//! Keeping a tenant's lease alive while its round runs, and knowing when writing under it is no
//! longer safe.
//!
//! # Lifetime and renewal
//! The lease's TTL (`worker.lease_ttl`, 5 s by default) is the longest a holder that died without
//! releasing (SIGKILL, a lost node) blocks its tenant: the next round takes the tenant once the
//! key expires. The keeper renews it every fifth of the TTL (1 s), so a Redis hiccup has four
//! more chances before the lease could lapse; a failed renewal is simply tried again at the next
//! tick. The holder counts its lease valid until the instant it *sent* its last successful
//! renewal (or the acquisition) plus the TTL. Redis started the new lifetime no earlier than
//! that, so the holder never believes in its lease longer than Redis keeps it. Past that
//! instant, or as soon as a renewal finds the key gone or someone else's, the lease is lost and
//! the round stops before its next effect.
//!
//! # Why a short TTL cannot let two rounds write together
//! No lease with an expiry can stop a holder that is paused (a frozen VM, a starved runtime)
//! past its TTL from waking up and carrying on. The PostgreSQL fence makes that harmless: every
//! new holder raises `tenant_sync_state.fence` to its (larger) token before it does anything
//! else, and every write of a round is a transaction that first checks the fence is still at
//! most its own token; the fence row's lock orders the two. Once a newer holder has claimed the
//! tenant, an older one's writes are refused. A shorter TTL therefore costs nothing in
//! correctness; it only makes a paused holder more likely to lose its lease and retry.
//!
//! # Release
//! A round releases its lease when it ends (done, failed, or stopped by a graceful shutdown), so
//! the next round takes the tenant at once. A lease dropped without being released (the round
//! panicked) stops being renewed at once and is released in the background.

use crate::lease::{Lease, RedisError, RedisState};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Renewals per lease lifetime: the keeper renews every `ttl / RENEWALS_PER_TTL`.
pub(crate) const RENEWALS_PER_TTL: u32 = 5;

/// Where a held lease is renewed and released: Redis ([`RedisState`]) in production.
pub(crate) trait LeaseStore: Clone + Send + Sync + 'static {
    /// Extends the lease to `ttl` from now; `false` when it is no longer this holder's.
    fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, RedisError>> + Send;

    /// Gives the lease up if this holder still has it.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), RedisError>> + Send;
}

impl LeaseStore for RedisState {
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, RedisError> {
        RedisState::renew(self, lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), RedisError> {
        RedisState::release(self, lease).await
    }
}

/// How long the holder may still trust its lease, and whether it already knows it lost it.
#[derive(Debug)]
struct Validity {
    until: Mutex<Instant>,
    lost: CancellationToken,
}

impl Validity {
    fn until(&self) -> Instant {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn extend(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }
}

/// A lease this process holds, renewed in the background until released or dropped.
#[derive(Debug)]
pub(crate) struct HeldLease<S: LeaseStore = RedisState> {
    lease: Lease,
    store: S,
    validity: Arc<Validity>,
    keeper: JoinHandle<()>,
    released: bool,
}

impl<S: LeaseStore> HeldLease<S> {
    /// Starts keeping `lease`, taken for `ttl` by a request sent at `asked`.
    pub(crate) fn keep(store: S, lease: Lease, ttl: Duration, asked: Instant) -> Self {
        let validity = Arc::new(Validity {
            until: Mutex::new(asked + ttl),
            lost: CancellationToken::new(),
        });
        let keeper = tokio::spawn(renew(store.clone(), lease.clone(), ttl, validity.clone()));
        Self {
            lease,
            store,
            validity,
            keeper,
            released: false,
        }
    }

    /// The fencing token every write under this lease carries.
    pub(crate) fn token(&self) -> i64 {
        self.lease.token
    }

    /// Whether the holder may still act on the lease: not known lost, and not past the instant
    /// Redis may have let it expire.
    pub(crate) fn is_held(&self) -> bool {
        !self.validity.lost.is_cancelled() && Instant::now() < self.validity.until()
    }

    /// Resolves once the lease is lost (taken, deleted, or not renewed in time); reads race
    /// against it so a lost round stops waiting on Graph at once.
    pub(crate) async fn lost(&self) {
        self.validity.lost.cancelled().await;
    }

    /// Stops renewing and gives the lease up, so the next round takes the tenant at once.
    pub(crate) async fn release(mut self) -> Result<(), RedisError> {
        self.keeper.abort();
        self.released = true;
        self.store.release(&self.lease).await
    }
}

impl<S: LeaseStore> Drop for HeldLease<S> {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.released {
            return;
        }
        // Dropped without a release (its round panicked): give it up in the background, or
        // leave it to expire when the runtime is already gone.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, lease) = (self.store.clone(), self.lease.clone());
            runtime.spawn(async move {
                if let Err(error) = store.release(&lease).await {
                    tracing::warn!(error = %error, "lease release failed; it expires by itself");
                }
            });
        }
    }
}

/// Renews every `ttl / RENEWALS_PER_TTL` until the lease is lost: taken or deleted (a renewal
/// says so), or not renewed before the holder's own deadline.
async fn renew<S: LeaseStore>(store: S, lease: Lease, ttl: Duration, validity: Arc<Validity>) {
    let every = ttl / RENEWALS_PER_TTL;
    loop {
        let until = validity.until();
        if tokio::time::timeout_at(until, tokio::time::sleep(every))
            .await
            .is_err()
        {
            tracing::warn!(tenant = %lease.tenant, "lease not renewed in time; giving it up");
            break;
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(until, store.renew(&lease, ttl)).await {
            Ok(Ok(true)) => validity.extend(sent + ttl),
            Ok(Ok(false)) => {
                tracing::warn!(tenant = %lease.tenant, "lease expired or taken by another holder");
                break;
            }
            Ok(Err(error)) => {
                tracing::warn!(tenant = %lease.tenant, error = %error, "lease renewal failed; trying again");
            }
            Err(_) => {
                tracing::warn!(tenant = %lease.tenant, "lease renewal unanswered before it could expire");
                break;
            }
        }
    }
    validity.lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};
    use uuid::Uuid;

    const TTL: Duration = Duration::from_secs(5);

    /// Answers renewals from a script (the last answer repeats) and counts calls.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Option<bool>>>>,
        renewals: Arc<AtomicU32>,
        releases: Arc<AtomicU32>,
    }

    impl Scripted {
        /// `Some(held)` answers a renewal; `None` fails it like an unreachable Redis.
        fn answering(answers: &[Option<bool>]) -> Self {
            let store = Self::default();
            store.answers.lock().unwrap().extend(answers);
            store
        }
    }

    impl LeaseStore for Scripted {
        async fn renew(&self, _: &Lease, _: Duration) -> Result<bool, RedisError> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().unwrap();
            let answer = if answers.len() > 1 {
                answers.pop_front()
            } else {
                answers.front().copied()
            };
            answer.flatten().ok_or_else(|| {
                RedisError::from(redis::RedisError::from((redis::ErrorKind::Io, "down")))
            })
        }

        async fn release(&self, _: &Lease) -> Result<(), RedisError> {
            self.releases.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn lease() -> Lease {
        Lease {
            tenant: Uuid::new_v4(),
            token: 7,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_whose_renewals_succeed_is_held_for_as_long_as_its_round_runs() {
        let store = Scripted::answering(&[Some(true)]);
        let held = HeldLease::keep(store.clone(), lease(), TTL, Instant::now());
        tokio::time::sleep(TTL * 12).await;
        assert!(held.is_held());
        let renewals = store.renewals.load(Ordering::SeqCst);
        assert!(
            (59..=60).contains(&renewals),
            "{renewals} renewals in twelve lifetimes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_redis_stops_answering_for_is_given_up_by_the_time_it_could_expire() {
        let store = Scripted::answering(&[Some(true), None]);
        let held = HeldLease::keep(store.clone(), lease(), TTL, Instant::now());
        // Renewed once at 1 s: valid until 6 s although every later renewal fails.
        tokio::time::sleep(TTL).await;
        assert!(
            held.is_held(),
            "failed renewals are tried again until the deadline"
        );
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(held.is_held());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !held.is_held(),
            "at the deadline Redis may hand it to someone else"
        );
        tokio::time::timeout(Duration::from_millis(1), held.lost())
            .await
            .expect("waiting reads are told at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_another_holder_took_is_lost_at_the_next_renewal() {
        let store = Scripted::answering(&[Some(false)]);
        let held = HeldLease::keep(store.clone(), lease(), TTL, Instant::now());
        tokio::time::sleep(TTL / RENEWALS_PER_TTL + Duration::from_millis(1)).await;
        assert!(!held.is_held());
        tokio::time::sleep(TTL * 3).await;
        assert_eq!(store.renewals.load(Ordering::SeqCst), 1, "renewing stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_no_longer_renewed() {
        let store = Scripted::answering(&[Some(true)]);
        let held = HeldLease::keep(store.clone(), lease(), TTL, Instant::now());
        held.release().await.unwrap();
        tokio::time::sleep(TTL * 3).await;
        assert_eq!(store.renewals.load(Ordering::SeqCst), 0);
        assert_eq!(store.releases.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_dropped_by_a_panicking_round_stops_renewing_and_is_released() {
        let store = Scripted::answering(&[Some(true)]);
        let round = tokio::spawn({
            let store = store.clone();
            async move {
                let _held = HeldLease::keep(store, lease(), TTL, Instant::now());
                tokio::time::sleep(TTL).await;
                panic!("a bug in the round");
            }
        });
        assert!(round.await.is_err());
        let renewals = store.renewals.load(Ordering::SeqCst);
        tokio::time::sleep(TTL * 3).await;
        assert_eq!(store.renewals.load(Ordering::SeqCst), renewals);
        assert_eq!(store.releases.load(Ordering::SeqCst), 1);
    }
}
