//! The soak's fault schedule, drawn from a seed before anything runs: the same seed, duration,
//! interval and fault families give the same list, printed at the start so that a failing run
//! can be replayed fault for fault.
//!
//! Faults are dealt from a shuffled deck holding each enabled family once (a SIGKILL once per
//! service), reshuffled when it runs out: every kind comes up about equally often however short
//! the run, and a service is killed several times in any run of a few decks. The gaps between
//! faults are exponential with the given mean (a Poisson schedule), at least [`MIN_GAP`].

use crate::pipeline::Service;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use std::fmt;
use std::time::Duration;

/// The shortest gap between two planned faults.
pub const MIN_GAP: Duration = Duration::from_secs(2);

/// A family of faults, as `--faults` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// SIGKILL of a service and its restart.
    Kill,
    /// RabbitMQ stopped, then started again.
    Broker,
    /// PostgreSQL restarted.
    Postgres,
    /// The run's Redis database flushed.
    Redis,
    /// graph-sim answers every Graph request with 429.
    Throttle,
    /// graph-sim answers every Graph request with 503.
    GraphErrors,
    /// graph-sim loses notifications.
    Lose,
    /// graph-sim sends notifications twice.
    Duplicate,
    /// graph-sim delays notifications.
    Delay,
    /// graph-sim sends each batch's notifications one by one in reverse order.
    Reorder,
    /// A network partition (nftables drop rules): the services cut off from Graph, or Graph
    /// from the webhook.
    Network,
}

impl Family {
    /// Every family, in `--faults` order.
    pub const ALL: [Family; 11] = [
        Family::Kill,
        Family::Broker,
        Family::Postgres,
        Family::Redis,
        Family::Throttle,
        Family::GraphErrors,
        Family::Lose,
        Family::Duplicate,
        Family::Delay,
        Family::Reorder,
        Family::Network,
    ];

    /// Its `--faults` name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Kill => "kill",
            Family::Broker => "broker",
            Family::Postgres => "postgres",
            Family::Redis => "redis",
            Family::Throttle => "throttle",
            Family::GraphErrors => "graph-5xx",
            Family::Lose => "lose",
            Family::Duplicate => "duplicate",
            Family::Delay => "delay",
            Family::Reorder => "reorder",
            Family::Network => "network",
        }
    }

    /// Parses a comma-separated `--faults` list (`all` for every family).
    pub fn parse_list(list: &str) -> Result<Vec<Family>, String> {
        let mut families = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                families.extend(Family::ALL);
                continue;
            }
            let family = Family::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown fault {name:?}; known: all, {}", known.join(", "))
                })?;
            families.push(family);
        }
        families.sort_unstable();
        families.dedup();
        Ok(families)
    }
}

/// When, relative to the work in flight, a service is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Whenever the schedule says, under the change stream alone.
    Anytime,
    /// `after` a burst of title changes started: a batch is in flight through the pipeline.
    MidBatch {
        /// From the burst's start to the kill.
        after: Duration,
    },
    /// `after` a full sync (the reconciler: a reconcile run) of a tenant was asked for.
    MidSync {
        /// From the request to the kill.
        after: Duration,
    },
    /// During a tenant's initial sync: once this share (percent) of its cards is written or
    /// `after` the request, whichever comes first (a small tenant's cards come in one batch).
    InitialSync {
        /// Percent of the expected cards.
        percent: u8,
        /// From the request to the kill at the latest.
        after: Duration,
    },
}

/// A link a network partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Every service to Graph (graph-sim's HTTPS port): rounds, tokens, subscriptions.
    Graph,
    /// Graph to the webhook: notifications and their retries.
    Webhook,
}

/// One fault with everything random about it already drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, `down` without the service, then the same binary started again.
    Kill {
        /// Which service.
        service: Service,
        /// When in its work.
        moment: Moment,
        /// How long it stays dead.
        down: Duration,
        /// Which tenant the burst or sync goes to (an index into the pipeline's tenants).
        tenant: usize,
    },
    /// `rabbitmqctl stop_app` for `down`, then `start_app`.
    Broker {
        /// How long the broker is stopped.
        down: Duration,
    },
    /// `pg_ctlcluster … restart -m fast`.
    Postgres,
    /// `FLUSHDB` of the run's Redis database.
    Redis,
    /// Graph answers 429 (`Retry-After: 1`) to everything for `lasting`.
    Throttle {
        /// How long.
        lasting: Duration,
    },
    /// Graph answers 503 to everything for `lasting`.
    GraphErrors {
        /// How long.
        lasting: Duration,
    },
    /// Notifications lost (probability `percent`/100) for `lasting`.
    Lose {
        /// Share lost.
        percent: u8,
        /// How long.
        lasting: Duration,
    },
    /// Notifications sent twice (probability `percent`/100) for `lasting`.
    Duplicate {
        /// Share doubled.
        percent: u8,
        /// How long.
        lasting: Duration,
    },
    /// Every notification held back `by` before its first attempt, for `lasting`.
    Delay {
        /// The delay.
        by: Duration,
        /// How long.
        lasting: Duration,
    },
    /// Each batch's notifications sent one per POST in reverse order, for `lasting`.
    Reorder {
        /// How long.
        lasting: Duration,
    },
    /// Every packet to `link`'s port dropped for `lasting` (connections hang, then time out).
    Partition {
        /// Which link.
        link: Link,
        /// How long.
        lasting: Duration,
    },
}

impl Fault {
    /// The kind it is counted under in the report (`kill delta-worker`, `broker stop`, …).
    pub fn kind(&self) -> String {
        match self {
            Fault::Kill {
                service, moment, ..
            } => {
                let moment = match moment {
                    Moment::Anytime => "",
                    Moment::MidBatch { .. } => " mid-batch",
                    Moment::MidSync { .. } => " mid-sync",
                    Moment::InitialSync { .. } => " mid-initial-sync",
                };
                format!("kill {}{moment}", service.name())
            }
            Fault::Broker { .. } => "rabbitmq stop".into(),
            Fault::Postgres => "postgresql restart".into(),
            Fault::Redis => "redis flush".into(),
            Fault::Throttle { .. } => "graph 429 storm".into(),
            Fault::GraphErrors { .. } => "graph 503s".into(),
            Fault::Lose { .. } => "notifications lost".into(),
            Fault::Duplicate { .. } => "notifications duplicated".into(),
            Fault::Delay { .. } => "notifications delayed".into(),
            Fault::Reorder { .. } => "notifications reordered".into(),
            Fault::Partition {
                link: Link::Graph, ..
            } => "partition services-graph".into(),
            Fault::Partition {
                link: Link::Webhook,
                ..
            } => "partition graph-webhook".into(),
        }
    }

    /// The same fault lasting (or down) at most `max`.
    #[must_use]
    pub fn capped(self, max: Duration) -> Self {
        let cap = |d: Duration| d.min(max);
        match self {
            Fault::Kill {
                service,
                moment,
                down,
                tenant,
            } => Fault::Kill {
                service,
                moment,
                down: cap(down),
                tenant,
            },
            Fault::Broker { down } => Fault::Broker { down: cap(down) },
            Fault::Throttle { lasting } => Fault::Throttle {
                lasting: cap(lasting),
            },
            Fault::GraphErrors { lasting } => Fault::GraphErrors {
                lasting: cap(lasting),
            },
            Fault::Lose { percent, lasting } => Fault::Lose {
                percent,
                lasting: cap(lasting),
            },
            Fault::Duplicate { percent, lasting } => Fault::Duplicate {
                percent,
                lasting: cap(lasting),
            },
            Fault::Delay { by, lasting } => Fault::Delay {
                by,
                lasting: cap(lasting),
            },
            Fault::Reorder { lasting } => Fault::Reorder {
                lasting: cap(lasting),
            },
            Fault::Partition { link, lasting } => Fault::Partition {
                link,
                lasting: cap(lasting),
            },
            other @ (Fault::Postgres | Fault::Redis) => other,
        }
    }

    /// The service it kills, if it is a kill.
    pub fn killed(&self) -> Option<Service> {
        match self {
            Fault::Kill { service, .. } => Some(*service),
            _ => None,
        }
    }
}

fn secs(d: &Duration) -> f64 {
    d.as_secs_f64()
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill {
                service,
                moment,
                down,
                tenant,
            } => {
                write!(f, "SIGKILL {}", service.name())?;
                match moment {
                    Moment::Anytime => {}
                    Moment::MidBatch { after } => write!(
                        f,
                        " {:.1} s into a burst of changes of tenant {}",
                        secs(after),
                        tenant + 1
                    )?,
                    Moment::MidSync { after } => write!(
                        f,
                        " {:.1} s after a full sync of tenant {} was asked for",
                        secs(after),
                        tenant + 1
                    )?,
                    Moment::InitialSync { percent, after } => write!(
                        f,
                        " in tenant {}'s initial sync, once {percent}% of its cards are written \
                         or {:.1} s after it was asked for",
                        tenant + 1,
                        secs(after)
                    )?,
                }
                write!(f, ", restarted {:.1} s later", secs(down))
            }
            Fault::Broker { down } => write!(f, "RabbitMQ stopped for {:.1} s", secs(down)),
            Fault::Postgres => write!(f, "PostgreSQL restarted (fast shutdown)"),
            Fault::Redis => write!(f, "Redis database flushed"),
            Fault::Throttle { lasting } => {
                write!(
                    f,
                    "Graph answers 429 to everything for {:.0} s",
                    secs(lasting)
                )
            }
            Fault::GraphErrors { lasting } => {
                write!(
                    f,
                    "Graph answers 503 to everything for {:.0} s",
                    secs(lasting)
                )
            }
            Fault::Lose { percent, lasting } => write!(
                f,
                "{percent}% of notifications lost for {:.0} s",
                secs(lasting)
            ),
            Fault::Duplicate { percent, lasting } => write!(
                f,
                "{percent}% of notifications sent twice for {:.0} s",
                secs(lasting)
            ),
            Fault::Delay { by, lasting } => write!(
                f,
                "notifications delayed {:.1} s for {:.0} s",
                secs(by),
                secs(lasting)
            ),
            Fault::Reorder { lasting } => {
                write!(f, "notifications reordered for {:.0} s", secs(lasting))
            }
            Fault::Partition { link, lasting } => write!(
                f,
                "network partition {} for {:.0} s (nftables drop)",
                match link {
                    Link::Graph => "between the services and Graph",
                    Link::Webhook => "between Graph and the webhook",
                },
                secs(lasting)
            ),
        }
    }
}

/// A fault and when it is due, from the start of the change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// When it is due (it waits for the previous fault's convergence if that takes longer).
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
}

/// What the schedule is drawn from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// How long the change stream runs; faults are due within it.
    pub length: Duration,
    /// Mean time between faults.
    pub mean_gap: Duration,
    /// The families to draw from.
    pub families: Vec<Family>,
    /// How many tenants bursts and syncs may go to.
    pub tenants: usize,
    /// Longest a fault lasts (a short soak's faults are short, so that it meets every kind).
    pub max_fault: Duration,
}

/// The whole schedule: the kills during the initial syncs, then the faults under the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Kills during the initial syncs (tenant by tenant), before the stream starts.
    pub initial: Vec<Fault>,
    /// Faults under the change stream, in order.
    pub stream: Vec<Planned>,
}

fn between(rng: &mut rand::rngs::StdRng, low_ms: u64, high_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(low_ms..=high_ms))
}

/// The moments a service can be killed at, beyond [`Moment::Anytime`].
fn moments(service: Service) -> &'static [&'static str] {
    match service {
        Service::Webhook => &["anytime", "batch"],
        Service::DeltaWorker | Service::CardWriter => &["anytime", "batch", "sync"],
        Service::Reconciler => &["anytime", "sync"],
        Service::SubscriptionManager => &["anytime"],
    }
}

fn draw_fault(rng: &mut rand::rngs::StdRng, card: Card, tenants: usize) -> Fault {
    let lasting = between(rng, 5_000, 20_000);
    match card {
        Card::Kill(service) => {
            let moment = match *moments(service)
                .get(rng.random_range(0..moments(service).len()))
                .unwrap_or(&"anytime")
            {
                "batch" => Moment::MidBatch {
                    after: between(rng, 100, 1_500),
                },
                "sync" => Moment::MidSync {
                    after: between(rng, 100, 1_500),
                },
                _ => Moment::Anytime,
            };
            Fault::Kill {
                service,
                moment,
                down: between(rng, 0, 5_000),
                tenant: rng.random_range(0..tenants.max(1)),
            }
        }
        Card::Other(Family::Broker) => Fault::Broker {
            down: between(rng, 2_000, 8_000),
        },
        Card::Other(Family::Postgres) => Fault::Postgres,
        Card::Other(Family::Redis) => Fault::Redis,
        Card::Other(Family::Throttle) => Fault::Throttle { lasting },
        Card::Other(Family::GraphErrors) => Fault::GraphErrors { lasting },
        Card::Other(Family::Lose) => Fault::Lose {
            percent: rng.random_range(20..=100),
            lasting,
        },
        Card::Other(Family::Duplicate) => Fault::Duplicate {
            percent: rng.random_range(20..=100),
            lasting,
        },
        Card::Other(Family::Delay) => Fault::Delay {
            by: between(rng, 1_000, 8_000),
            lasting,
        },
        Card::Other(Family::Network) => Fault::Partition {
            link: if rng.random_bool(0.5) {
                Link::Graph
            } else {
                Link::Webhook
            },
            lasting,
        },
        Card::Other(Family::Reorder | Family::Kill) => Fault::Reorder { lasting },
    }
}

#[derive(Debug, Clone, Copy)]
enum Card {
    Kill(Service),
    Other(Family),
}

impl Schedule {
    /// Draws the schedule of `plan`.
    pub fn draw(plan: &Plan) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
        let kills = plan.families.contains(&Family::Kill);
        let mut initial = Vec::new();
        if kills {
            // The delta-worker dies in one tenant's initial round, the card-writer in the
            // other's initial batches.
            for (tenant, service) in [Service::DeltaWorker, Service::CardWriter]
                .into_iter()
                .enumerate()
            {
                initial.push(Fault::Kill {
                    service,
                    moment: Moment::InitialSync {
                        percent: rng.random_range(10..=60),
                        after: between(&mut rng, 20, 250),
                    },
                    down: between(&mut rng, 0, 3_000),
                    tenant: tenant % plan.tenants.max(1),
                });
            }
        }
        let mut deck: Vec<Card> = Vec::new();
        for family in &plan.families {
            if *family == Family::Kill {
                deck.extend(Service::ALL.map(Card::Kill));
            } else {
                deck.push(Card::Other(*family));
            }
        }
        let mut stream = Vec::new();
        if deck.is_empty() {
            return Self { initial, stream };
        }
        let mean = plan.mean_gap.as_secs_f64().max(MIN_GAP.as_secs_f64());
        let mut at = Duration::ZERO;
        let mut hand: Vec<Card> = Vec::new();
        loop {
            // Exponential gaps: -ln(U) × mean.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let gap = Duration::from_secs_f64(-u.ln() * mean).max(MIN_GAP);
            at += gap;
            if at >= plan.length {
                break;
            }
            if hand.is_empty() {
                hand = deck.clone();
                hand.shuffle(&mut rng);
            }
            let card = hand.pop().unwrap_or(Card::Other(Family::Redis));
            stream.push(Planned {
                at,
                fault: draw_fault(&mut rng, card, plan.tenants).capped(plan.max_fault),
            });
        }
        Self { initial, stream }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, families: &[Family]) -> Plan {
        Plan {
            seed,
            length: Duration::from_secs(3_600),
            mean_gap: Duration::from_secs(30),
            families: families.to_vec(),
            tenants: 2,
            max_fault: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_another_seed_another() {
        let all = Family::ALL;
        assert_eq!(
            Schedule::draw(&plan(7, &all)),
            Schedule::draw(&plan(7, &all))
        );
        assert_ne!(
            Schedule::draw(&plan(7, &all)),
            Schedule::draw(&plan(8, &all))
        );
    }

    #[test]
    fn an_hour_at_one_fault_per_30_s_kills_every_service_several_times() {
        let schedule = Schedule::draw(&plan(7, &Family::ALL));
        let n = schedule.stream.len();
        assert!((80..=160).contains(&n), "{n} faults in an hour");
        for service in Service::ALL {
            let kills = schedule
                .stream
                .iter()
                .filter(|p| p.fault.killed() == Some(service))
                .count();
            assert!(kills >= 4, "{} killed {kills} times", service.name());
        }
        let kinds: std::collections::BTreeSet<String> =
            schedule.stream.iter().map(|p| p.fault.kind()).collect();
        for kind in [
            "rabbitmq stop",
            "postgresql restart",
            "redis flush",
            "graph 429 storm",
            "graph 503s",
            "notifications lost",
            "notifications duplicated",
            "notifications delayed",
            "notifications reordered",
            "kill card-writer mid-batch",
            "kill delta-worker mid-sync",
            "partition services-graph",
            "partition graph-webhook",
        ] {
            assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
        }
        assert_eq!(schedule.initial.len(), 2);
        let mut last = Duration::ZERO;
        for planned in &schedule.stream {
            assert!(planned.at >= last + MIN_GAP && planned.at < Duration::from_secs(3_600));
            last = planned.at;
        }
    }

    #[test]
    fn capped_faults_last_no_longer_than_the_cap_and_keep_their_kind() {
        let mut short = plan(7, &Family::ALL);
        short.max_fault = Duration::from_secs(3);
        let long = Schedule::draw(&plan(7, &Family::ALL));
        let capped = Schedule::draw(&short);
        assert_eq!(long.stream.len(), capped.stream.len());
        for (l, c) in long.stream.iter().zip(&capped.stream) {
            assert_eq!((l.at, l.fault.kind()), (c.at, c.fault.kind()));
            assert_eq!(l.fault.clone().capped(Duration::from_secs(3)), c.fault);
        }
        assert!(capped.stream.iter().all(|p| match &p.fault {
            Fault::Throttle { lasting } | Fault::Lose { lasting, .. } => {
                *lasting <= Duration::from_secs(3)
            }
            Fault::Kill { down, .. } | Fault::Broker { down } => *down <= Duration::from_secs(3),
            _ => true,
        }));
    }

    #[test]
    fn only_the_listed_families_are_drawn() {
        let families = Family::parse_list("redis, lose").unwrap();
        assert_eq!(families, [Family::Redis, Family::Lose]);
        let schedule = Schedule::draw(&plan(1, &families));
        assert!(schedule.initial.is_empty());
        assert!(!schedule.stream.is_empty());
        assert!(
            schedule
                .stream
                .iter()
                .all(|p| matches!(p.fault, Fault::Redis | Fault::Lose { .. }))
        );
        assert!(Family::parse_list("kill,nonsense").is_err());
        assert_eq!(Family::parse_list("all").unwrap().len(), Family::ALL.len());
    }
}
