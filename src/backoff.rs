//! Exponential back-off: the one pause policy every retry and poll loop of trialtail uses.
//!
//! A [`Backoff`] hands out pauses starting at `first` and doubling up to `max`; [`Backoff::reset`] starts over
//! after a success (or after data, for a poll loop). It only computes durations: callers sleep (or select on a
//! sleep next to a signal), so a back-off never delays a shutdown.

use std::time::Duration;

/// Pauses that double from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off whose first pause is `first` and whose longest is `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// The pause to take now; the one after it is twice as long, at most `max`.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(self.max);
        pause
    }

    /// The pause [`Backoff::pause`] would hand out, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts over at the first pause.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_max_and_reset_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let pauses: Vec<_> = (0..5).map(|_| b.pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(b.peek(), ms(500));
        b.reset();
        assert_eq!(b.pause(), ms(100));
    }
}
