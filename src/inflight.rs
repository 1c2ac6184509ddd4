//! The inventory responses (`/metrics`, `/keys`, `/keys.json`) being sent at once, at most
//! `--web.max-inflight-responses`. At the cap, the response whose client has gone longest
//! without taking a chunk, if that is at least [`STALLED`], has its connection cut to make
//! room: clients that ask and never read cannot keep a scraper out until the write timeout
//! frees their places. Only while every response is moving is a new one refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A response whose client took no chunk for this long may be cut for a new one. A client
/// reading as slowly as 64 KiB a second still takes a chunk every second.
pub const STALLED: Duration = Duration::from_secs(1);

pub struct InFlight {
    max: usize,
    epoch: Instant,
    sending: Mutex<HashMap<u64, Sending>>,
    next: AtomicU64,
}

struct Sending {
    /// When its client last took a chunk, in milliseconds since `epoch`.
    moved: Arc<AtomicU64>,
    /// Closes the response's connection.
    cut: Arc<Notify>,
}

/// A response's place, freed when dropped (sent, or its connection gone).
pub struct Place {
    id: u64,
    moved: Arc<AtomicU64>,
    inflight: Arc<InFlight>,
}

/// Why a response got its place.
#[derive(Debug, PartialEq)]
pub enum Admitted {
    Free,
    /// A stalled response's connection was cut for it.
    StalledCut,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(InFlight {
            max,
            epoch: Instant::now(),
            sending: Mutex::default(),
            next: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A place for a response on the connection `cut` closes; at the cap, the place of the
    /// most stalled response, or None when none has stalled for [`STALLED`].
    pub fn admit(self: &Arc<Self>, cut: Arc<Notify>) -> Option<(Place, Admitted)> {
        let now = self.now_ms();
        let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        let mut how = Admitted::Free;
        if sending.len() >= self.max {
            let stalled = sending
                .iter()
                .map(|(id, s)| (s.moved.load(Ordering::Relaxed), *id))
                .filter(|(moved, _)| now.saturating_sub(*moved) >= STALLED.as_millis() as u64)
                .min()?;
            if let Some(s) = sending.remove(&stalled.1) {
                // notify_one keeps a permit if the connection's task is not waiting yet.
                s.cut.notify_one();
            }
            how = Admitted::StalledCut;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let moved = Arc::new(AtomicU64::new(now));
        sending.insert(
            id,
            Sending {
                moved: moved.clone(),
                cut,
            },
        );
        let place = Place {
            id,
            moved,
            inflight: self.clone(),
        };
        Some((place, how))
    }
}

impl Place {
    /// Its client took a chunk: the response is moving.
    pub fn moved(&self) {
        self.moved.store(self.inflight.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut sending = self
            .inflight
            .sending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sending.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_stalled_response_is_cut_and_a_moving_one_never() {
        let inflight = InFlight::new(2);
        let cuts: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let (first, how) = inflight.admit(cuts[0].clone()).unwrap();
        assert_eq!(how, Admitted::Free);
        tokio::time::advance(Duration::from_millis(300)).await;
        let (second, _) = inflight.admit(cuts[1].clone()).unwrap();

        // Neither has gone STALLED without taking a chunk: a third is refused, nobody cut.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(inflight.admit(cuts[2].clone()).is_none());

        // The first has taken nothing for 1.2 s: it is cut, the second (moving) kept.
        tokio::time::advance(Duration::from_millis(300)).await;
        second.moved();
        let (third, how) = inflight.admit(cuts[2].clone()).unwrap();
        assert_eq!(how, Admitted::StalledCut);
        let cut = |n: &Notify| n.notified().now_or_never().is_some();
        assert!(cut(&cuts[0]), "the stalled response's connection is closed");
        assert!(!cut(&cuts[1]), "a moving response is never cut");

        // Its place was given away: dropping the cut response frees nothing twice.
        drop(first);
        assert!(inflight.admit(cuts[3].clone()).is_none());
        drop(third);
        assert_eq!(inflight.admit(cuts[3].clone()).unwrap().1, Admitted::Free);
        drop(second);
    }
}
