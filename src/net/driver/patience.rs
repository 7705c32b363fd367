//! [`Patience`]: how long a session waits for a client, as deadlines that
//! bound a whole line, a whole handshake, a whole message.

use super::*;

/// The time limits of a session.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a whole command line.
    pub command: Duration,
    /// Longest pause inside message data, and the grace before the rate counts.
    pub data: Duration,
    /// Bytes per second message data must average after the grace (0: no minimum).
    pub min_data_rate: u64,
    /// For a whole TLS handshake.
    pub handshake: Duration,
    /// What `command` and `data` pauses shrink to while overloaded.
    pub overload: Duration,
}

#[derive(Debug, Clone, Copy)]
struct DataProgress {
    started: Instant,
    bytes: u64,
    last: Instant,
}

/// When the session stops waiting for the client, from what it waits for and
/// how far the client got. Pure: the clock is passed in.
#[derive(Debug, Clone)]
pub struct Patience {
    timeouts: Timeouts,
    command_started: Instant,
    data: Option<DataProgress>,
}

impl Patience {
    /// Waiting for the first command from `now`.
    pub fn new(timeouts: Timeouts, now: Instant) -> Patience {
        Patience {
            timeouts,
            command_started: now,
            data: None,
        }
    }

    fn pause(&self, limit: Duration, overloaded: bool) -> Duration {
        if overloaded {
            limit.min(self.timeouts.overload)
        } else {
            limit
        }
    }

    /// The moment the session gives up.
    pub fn deadline(&self, overloaded: bool) -> Instant {
        let t = &self.timeouts;
        match &self.data {
            None => self.command_started + self.pause(t.command, overloaded),
            Some(d) => {
                let idle = d.last + self.pause(t.data, overloaded);
                if t.min_data_rate == 0 {
                    return idle;
                }
                let earned = Duration::from_secs_f64(d.bytes as f64 / t.min_data_rate as f64);
                idle.min(d.started + t.data + earned)
            }
        }
    }

    /// `n` bytes arrived at `now`.
    pub fn received(&mut self, n: usize, now: Instant) {
        if let Some(d) = &mut self.data {
            d.bytes += n as u64;
            d.last = now;
        }
    }

    /// After the protocol took its input: inside data, or between or within
    /// command lines. A command's deadline starts only when the previous
    /// line is complete, so partial input never moves it.
    pub fn settle(&mut self, now: Instant, in_data: bool, partial_command: bool) {
        if in_data {
            self.data.get_or_insert(DataProgress {
                started: now,
                bytes: 0,
                last: now,
            });
            return;
        }
        if self.data.take().is_some() || !partial_command {
            self.command_started = now;
        }
    }
}
