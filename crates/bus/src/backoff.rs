//! Capped exponential backoff with jitter between a consumer's reconnect attempts, so a fleet of
//! consumers that lost the broker together does not come back in step.

use std::time::Duration;

/// Reconnect delays: doubling from 100 ms up to a cap, less up to half at random.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST.min(max),
            max,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        current.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(350));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[2] >= Duration::from_millis(175) && delays[2] <= Duration::from_millis(350));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(350)));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
