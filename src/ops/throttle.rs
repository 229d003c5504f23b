//! How long a checkpointed walk (backfill, repair) rests between batches.
//!
//! `--sleep` is a fixed pause. `--throttle auto` keeps a duty cycle, the share of wall
//! time spent inside batches, and adjusts it after every batch: it backs off
//! multiplicatively when the last batch made another session wait for one of its
//! locks, or when a row cost clearly more than the cheapest rows seen so far (the
//! database is busy with someone else's work), and speeds up additively otherwise.
//! The pause follows from the duty cycle and the batch's own duration, so it scales
//! with whatever the batches cost on this table and machine.
use std::time::Duration;

/// Lowest duty cycle: even under heavy load the walk keeps moving.
const MIN_DUTY: f64 = 0.1;
/// Duty cycle at the start, before anything is known about the load.
const START_DUTY: f64 = 0.5;
/// Factor applied to the duty cycle on a sign of contention.
const BACK_OFF: f64 = 0.7;
/// Added to the duty cycle after a batch with no sign of contention.
const SPEED_UP: f64 = 0.05;
/// A row costing this many times the cheapest seen counts as contention.
const SLOW_RATIO: f64 = 1.5;
/// How fast the cheapest cost seen drifts up per batch, so that a table that got
/// slower for good (bigger rows, colder cache) is not treated as contended forever.
const BEST_DRIFT: f64 = 1.01;
/// Longest pause, whatever the batch took.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pause policy of a walk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throttle {
    /// The same pause after every batch (zero: none).
    Sleep(Duration),
    /// Adapt the pause to batch latency and lock waits.
    Auto,
}

/// What one batch told the throttle.
#[derive(Debug, Clone, Copy)]
pub struct BatchSample {
    /// Wall time of the batch transaction.
    pub elapsed: Duration,
    /// Rows the batch visited.
    pub rows: i64,
    /// Other sessions that were waiting for a lock the batch held, just before it
    /// committed.
    pub waiters: i64,
}

/// The state of a throttle across batches.
#[derive(Debug, Clone)]
pub struct Governor {
    policy: Throttle,
    duty: f64,
    best_cost: Option<f64>,
}

// === impl Throttle ===

impl std::str::FromStr for Throttle {
    type Err = String;

    fn from_str(s: &str) -> Result<Throttle, String> {
        match s {
            "auto" => Ok(Throttle::Auto),
            "off" | "none" => Ok(Throttle::Sleep(Duration::ZERO)),
            other => Err(format!(
                "unknown throttle {other:?}: use `auto`, or `off` with --sleep MS for a fixed pause"
            )),
        }
    }
}

// === impl Governor ===

impl Governor {
    /// A governor for `policy`.
    pub fn new(policy: Throttle) -> Governor {
        Governor {
            policy,
            duty: START_DUTY,
            best_cost: None,
        }
    }

    /// Whether the walk must sample lock waiters inside each batch.
    pub fn wants_waiters(&self) -> bool {
        self.policy == Throttle::Auto
    }

    /// The duty cycle in force (1.0 for a fixed policy).
    pub fn duty(&self) -> f64 {
        match self.policy {
            Throttle::Sleep(_) => 1.0,
            Throttle::Auto => self.duty,
        }
    }

    /// Learns from a committed batch and returns the pause before the next.
    pub fn after_batch(&mut self, sample: BatchSample) -> Duration {
        let Throttle::Sleep(fixed) = self.policy else {
            return self.adapt(sample);
        };
        fixed
    }

    fn adapt(&mut self, sample: BatchSample) -> Duration {
        let secs = sample.elapsed.as_secs_f64();
        let cost = secs / sample.rows.max(1) as f64;
        let best = match self.best_cost {
            Some(best) => (best * BEST_DRIFT).min(cost),
            None => cost,
        };
        self.best_cost = Some(best);
        let slow = best > 0.0 && cost > best * SLOW_RATIO;
        if sample.waiters > 0 || slow {
            self.duty = (self.duty * BACK_OFF).max(MIN_DUTY);
        } else {
            self.duty = (self.duty + SPEED_UP).min(1.0);
        }
        let pause = secs * (1.0 - self.duty) / self.duty;
        Duration::from_secs_f64(pause.clamp(0.0, MAX_PAUSE.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, rows: i64, waiters: i64) -> BatchSample {
        BatchSample {
            elapsed: Duration::from_millis(ms),
            rows,
            waiters,
        }
    }

    #[test]
    fn fixed_sleep_ignores_the_samples() {
        let mut g = Governor::new(Throttle::Sleep(Duration::from_millis(20)));
        assert!(!g.wants_waiters());
        assert_eq!(g.after_batch(sample(500, 10, 3)), Duration::from_millis(20));
    }

    #[test]
    fn auto_speeds_up_when_quiet_and_backs_off_on_waiters_and_slow_batches() {
        let mut g = Governor::new(Throttle::Auto);
        let mut pause = Duration::MAX;
        for _ in 0..20 {
            pause = g.after_batch(sample(10, 1000, 0));
        }
        assert_eq!(g.duty(), 1.0, "a quiet database gets the full speed");
        assert_eq!(pause, Duration::ZERO);
        let p = g.after_batch(sample(10, 1000, 2));
        assert!(g.duty() < 1.0 && p > Duration::ZERO, "{p:?}");
        for _ in 0..20 {
            g.after_batch(sample(40, 1000, 0));
        }
        assert_eq!(
            g.duty(),
            MIN_DUTY,
            "rows costing 4x the best keep it at the floor"
        );
        let p = g.after_batch(sample(40, 1000, 0));
        assert!(p >= Duration::from_millis(300), "{p:?}");
    }

    #[test]
    fn throttle_parses() {
        assert_eq!("auto".parse::<Throttle>(), Ok(Throttle::Auto));
        assert_eq!(
            "off".parse::<Throttle>(),
            Ok(Throttle::Sleep(Duration::ZERO))
        );
        assert!("fast".parse::<Throttle>().unwrap_err().contains("auto"));
    }
}
