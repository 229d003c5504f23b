//! How long a checkpointed walk (backfill, repair) rests between batches, and how big
//! its batches are.
//!
//! `--sleep` is a fixed pause and `--batch-size` a fixed size. `--throttle auto` adapts
//! both after every batch, from what the batch saw just before it committed, when it
//! held the most locks:
//! - another session waiting for one of its row locks: the batch holds too many rows
//!   for too long, so the next is smaller by [`SHRINK`] (rows locked and time held
//!   both shrink); without waiters it grows back by a quarter, up to `--batch-size`;
//! - a batch whose rows cost more than [`SPIKE_RATIO`] times the recent average: the
//!   database just got busier with someone else's work, so the duty cycle (the share
//!   of wall time spent inside batches) drops by a third;
//! - other client sessions running statements: an application shares the database,
//!   so the duty cycle is capped at [`APP_DUTY`]: the walk yields between batches;
//! - otherwise the duty cycle rises step by step, to full speed when nobody else is
//!   there.
//!
//! The pause follows from the duty cycle and the batch's own duration, so it scales with
//! what batches cost on this table and machine; the duty cycle and the batch size have
//! floors, so the walk never stops.
use std::time::Duration;

/// Lowest duty cycle: even under heavy contention the walk keeps moving.
const MIN_DUTY: f64 = 0.1;
/// Highest duty cycle while other sessions are running statements.
pub const APP_DUTY: f64 = 0.6;
/// Duty cycle at the start, before anything is known about the load.
const START_DUTY: f64 = 0.6;
/// Factor applied to the duty cycle on a latency spike.
const BACK_OFF: f64 = 0.67;
/// Added to the duty cycle after a batch with no spike.
const SPEED_UP: f64 = 0.05;
/// A batch whose rows cost this many times the recent average is a spike.
pub const SPIKE_RATIO: f64 = 3.0;
/// Weight of the newest batch in the recent average cost per row.
const COST_WEIGHT: f64 = 0.2;
/// Batches after the last one that saw other sessions running before the walk
/// takes the database for idle again.
const APP_MEMORY: u32 = 20;
/// Smallest batch `auto` shrinks to.
const MIN_BATCH: i64 = 500;
/// Factor applied to the batch size while sessions wait for a batch's locks.
pub const SHRINK: f64 = 0.7;
/// Longest pause, whatever the batch took.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pause policy of a walk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throttle {
    /// The same pause after every batch (zero: none), batches of the same size.
    Sleep(Duration),
    /// Adapt pause and batch size to lock waits, batch latency and other sessions.
    Auto,
}

/// What one batch told the throttle.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchSample {
    /// Wall time of the batch transaction.
    pub elapsed: Duration,
    /// Rows the batch visited.
    pub rows: i64,
    /// Other sessions waiting for a lock the batch held, just before it committed.
    pub waiters: i64,
    /// Other client sessions running a statement at that moment.
    pub active: i64,
}

/// The state of a throttle across batches.
#[derive(Debug, Clone)]
pub struct Governor {
    policy: Throttle,
    max_batch: i64,
    batch: i64,
    duty: f64,
    avg_cost: Option<f64>,
    /// Batches since one saw other sessions running statements.
    since_app: u32,
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
    /// A governor for `policy`, with batches of at most `batch_size` keys.
    pub fn new(policy: Throttle, batch_size: i64) -> Governor {
        let max_batch = batch_size.max(1);
        Governor {
            policy,
            max_batch,
            batch: max_batch,
            duty: START_DUTY,
            avg_cost: None,
            since_app: APP_MEMORY,
        }
    }

    /// Whether the walk must sample other sessions inside each batch.
    pub fn wants_samples(&self) -> bool {
        self.policy == Throttle::Auto
    }

    /// The duty cycle in force (1.0 for a fixed policy).
    pub fn duty(&self) -> f64 {
        match self.policy {
            Throttle::Sleep(_) => 1.0,
            Throttle::Auto => self.duty,
        }
    }

    /// Keys the next batch visits.
    pub fn batch_size(&self) -> i64 {
        self.batch
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
        // The cost per row includes what a batch costs whatever its size, so a halved
        // batch costs somewhat more per row: the spike ratio leaves room for that.
        let spike = self
            .avg_cost
            .is_some_and(|avg| avg > 0.0 && cost > avg * SPIKE_RATIO);
        self.avg_cost = Some(match self.avg_cost {
            Some(avg) => avg + (cost - avg) * COST_WEIGHT,
            None => cost,
        });
        self.batch = if sample.waiters > 0 {
            ((self.batch as f64 * SHRINK) as i64).max(MIN_BATCH.min(self.max_batch))
        } else {
            (self.batch + self.batch / 4 + 1).min(self.max_batch)
        };
        self.since_app = if sample.active > 0 {
            0
        } else {
            self.since_app.saturating_add(1)
        };
        let cap = if self.since_app < APP_MEMORY {
            APP_DUTY
        } else {
            1.0
        };
        self.duty = if spike {
            self.duty * BACK_OFF
        } else {
            self.duty + SPEED_UP
        };
        self.duty = self.duty.clamp(MIN_DUTY, cap);
        let pause = secs * (1.0 - self.duty) / self.duty;
        Duration::from_secs_f64(pause.clamp(0.0, MAX_PAUSE.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, rows: i64, waiters: i64, active: i64) -> BatchSample {
        BatchSample {
            elapsed: Duration::from_millis(ms),
            rows,
            waiters,
            active,
        }
    }

    #[test]
    fn fixed_sleep_ignores_the_samples() {
        let mut g = Governor::new(Throttle::Sleep(Duration::from_millis(20)), 700);
        assert!(!g.wants_samples());
        assert_eq!(
            g.after_batch(sample(500, 10, 3, 9)),
            Duration::from_millis(20)
        );
        assert_eq!(g.batch_size(), 700);
    }

    #[test]
    fn auto_runs_at_full_speed_on_an_idle_database() {
        let mut g = Governor::new(Throttle::Auto, 1000);
        let mut pause = Duration::MAX;
        for _ in 0..20 {
            pause = g.after_batch(sample(10, 1000, 0, 0));
        }
        assert_eq!(g.duty(), 1.0);
        assert_eq!(pause, Duration::ZERO);
    }

    #[test]
    fn auto_yields_to_an_application() {
        let mut g = Governor::new(Throttle::Auto, 1000);
        let mut pause = Duration::ZERO;
        for _ in 0..20 {
            pause = g.after_batch(sample(10, 1000, 0, 3));
        }
        assert_eq!(g.duty(), APP_DUTY);
        let expected = 0.010 * (1.0 - APP_DUTY) / APP_DUTY;
        assert!((pause.as_secs_f64() - expected).abs() < 1e-6, "{pause:?}");
        // The application going quiet lets the walk speed up again, after a while.
        for _ in 0..APP_MEMORY + 20 {
            g.after_batch(sample(10, 1000, 0, 0));
        }
        assert_eq!(g.duty(), 1.0);
    }

    #[test]
    fn auto_shrinks_batches_while_sessions_wait_for_their_locks() {
        let mut g = Governor::new(Throttle::Auto, 5000);
        g.after_batch(sample(10, 5000, 2, 0));
        assert_eq!(g.batch_size(), 3500);
        for _ in 0..10 {
            g.after_batch(sample(1, 500, 1, 0));
        }
        assert_eq!(g.batch_size(), MIN_BATCH, "waiters keep it at the floor");
        for _ in 0..30 {
            g.after_batch(sample(1, 500, 0, 0));
        }
        assert_eq!(g.batch_size(), 5000, "and it grows back to --batch-size");
    }

    #[test]
    fn auto_backs_off_on_latency_spikes() {
        let mut g = Governor::new(Throttle::Auto, 1000);
        for _ in 0..20 {
            g.after_batch(sample(10, 1000, 0, 0));
        }
        let before = g.duty();
        g.after_batch(sample(50, 1000, 0, 0));
        assert!(g.duty() < before, "a batch five times slower backs off");
        let p = g.after_batch(sample(60_000, 1000, 0, 0));
        assert_eq!(p, MAX_PAUSE);
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
