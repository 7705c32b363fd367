//! How many errors a client may make: after a soft limit every further error
//! reply is held back a little longer, and at the hard limit the session is
//! closed. Postfix's `smtpd_soft_error_limit` (10), `smtpd_hard_error_limit`
//! (20) and `smtpd_error_sleep_time` (1 s) are the model; the delay grows by
//! one step per error beyond the soft limit.

use std::time::Duration;

/// The limits, from `limits.soft_error_limit`, `hard_error_limit` and `error_delay_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// Errors after which replies are delayed.
    pub soft: u64,
    /// Errors at which the session is closed.
    pub hard: u64,
    /// One step of the growing delay.
    pub delay: Duration,
}

impl Default for ErrorPolicy {
    fn default() -> ErrorPolicy {
        ErrorPolicy {
            soft: 10,
            hard: 20,
            delay: Duration::from_secs(1),
        }
    }
}

/// What the session does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer and go on.
    Continue,
    /// Say goodbye and close: the hard limit is reached.
    Close,
}

/// One session's error count and the delay its replies still owe.
#[derive(Debug, Clone)]
pub struct ErrorCount {
    policy: ErrorPolicy,
    errors: u64,
    owed: Duration,
}

impl ErrorCount {
    /// No errors yet.
    pub fn new(policy: ErrorPolicy) -> ErrorCount {
        ErrorCount {
            policy,
            errors: 0,
            owed: Duration::ZERO,
        }
    }

    /// Counts one error reply.
    pub fn record(&mut self) -> Verdict {
        self.errors += 1;
        if self.errors >= self.policy.hard {
            return Verdict::Close;
        }
        if let Some(beyond) = self.errors.checked_sub(self.policy.soft).filter(|&n| n > 0) {
            let steps = u32::try_from(beyond).unwrap_or(u32::MAX);
            self.owed += self.policy.delay.saturating_mul(steps);
        }
        Verdict::Continue
    }

    /// A message was delivered: the client is doing real work, start over.
    pub fn forgive(&mut self) {
        self.errors = 0;
    }

    /// The delay owed by the replies produced since the last call.
    pub fn take_delay(&mut self) -> Duration {
        std::mem::take(&mut self.owed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ErrorPolicy {
        ErrorPolicy {
            soft: 2,
            hard: 5,
            delay: Duration::from_millis(100),
        }
    }

    #[test]
    fn errors_up_to_the_soft_limit_cost_nothing() {
        let mut c = ErrorCount::new(policy());
        assert_eq!(c.record(), Verdict::Continue);
        assert_eq!(c.record(), Verdict::Continue);
        assert_eq!(c.take_delay(), Duration::ZERO);
    }

    #[test]
    fn beyond_the_soft_limit_the_delay_grows_with_each_error() {
        let mut c = ErrorCount::new(policy());
        c.record();
        c.record();
        c.record();
        assert_eq!(c.take_delay(), Duration::from_millis(100));
        c.record();
        assert_eq!(c.take_delay(), Duration::from_millis(200));
        assert_eq!(c.take_delay(), Duration::ZERO, "taking it pays it");
    }

    #[test]
    fn the_hard_limit_closes() {
        let mut c = ErrorCount::new(policy());
        for _ in 0..4 {
            assert_eq!(c.record(), Verdict::Continue);
        }
        assert_eq!(c.record(), Verdict::Close);
    }

    #[test]
    fn a_delivered_message_starts_the_count_over() {
        let mut c = ErrorCount::new(policy());
        for _ in 0..4 {
            c.record();
        }
        c.forgive();
        assert_eq!(c.errors(), 0);
        assert_eq!(c.record(), Verdict::Continue);
    }
}
