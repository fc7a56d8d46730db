//! Real-time pacing of file sources: frame `n` is due at `start + n / fps`.
//!
//! Deadlines are absolute, so sleeping late once does not delay every later frame. A source
//! that falls more than one period behind (a slow decode, a paused process) re-anchors instead
//! of bursting frames to catch up.

use std::time::{Duration, Instant};

/// Deadline pacing at a fixed rate.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    anchor: Option<Instant>,
    due: u64,
}

impl Pacer {
    /// A pacer at `fps` frames per second; panics unless `fps` is positive and finite.
    pub fn new(fps: f64) -> Self {
        assert!(fps.is_finite() && fps > 0.0, "pacer rate must be positive, got {fps}");
        Self { period: Duration::from_secs_f64(1.0 / fps), anchor: None, due: 0 }
    }

    /// The frame period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Sleeps until the next frame is due and returns that moment (the first call returns at
    /// once).
    pub fn wait(&mut self) -> Instant {
        let now = Instant::now();
        let anchor = *self.anchor.get_or_insert(now);
        let mut due = anchor + self.period.mul_f64(self.due as f64);
        if now > due + self.period {
            self.anchor = Some(now);
            self.due = 0;
            due = now;
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        self.due += 1;
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_without_drift() {
        let mut pacer = Pacer::new(200.0);
        let start = pacer.wait();
        for _ in 0..10 {
            pacer.wait();
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    }

    #[test]
    fn re_anchors_after_a_stall() {
        let mut pacer = Pacer::new(100.0);
        pacer.wait();
        std::thread::sleep(Duration::from_millis(50));
        let before = Instant::now();
        pacer.wait();
        pacer.wait();
        assert!(before.elapsed() >= Duration::from_millis(9));
    }
}
