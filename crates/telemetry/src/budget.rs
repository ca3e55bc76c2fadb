//! A budget of log lines: what an outsider can trigger (a flood of rejected notifications, say)
//! must not become a flood of log lines. Lines over the budget are counted, and the next line
//! the budget allows reports how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `per_window` lines per `window`.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_window` lines per `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            state: Mutex::new(BudgetState {
                started: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed)` when a line may be written now (with the number of lines refused
    /// since the last one allowed), `None` when the budget is spent.
    pub fn take(&self) -> Option<u64> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired = state
            .started
            .is_none_or(|started| now.duration_since(started) >= self.window);
        if expired {
            state.started = Some(now);
            state.used = 0;
        }
        if state.used < self.per_window {
            state.used += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_budget_are_refused_and_reported_by_the_next_window() {
        let budget = LogBudget::new(2, Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(budget.take_at(start), Some(0));
        assert_eq!(budget.take_at(start), Some(0));
        assert_eq!(budget.take_at(start), None);
        assert_eq!(budget.take_at(start + Duration::from_millis(500)), None);
        assert_eq!(budget.take_at(start + Duration::from_secs(1)), Some(2));
        assert_eq!(budget.take_at(start + Duration::from_secs(1)), Some(0));
    }
}
