//! The inventory responses (`/metrics`, `/keys`, `/keys.json`) being sent at once, at most
//! `--web.max-inflight-responses`. At the cap, a new response waits (at most [`STALLED`]) until
//! the one whose client has gone longest without taking a chunk has gone [`STALLED`], and
//! that one's connection is cut to make room: clients that ask and never read cannot keep a
//! scraper out until the write timeout frees their places. Only if every response kept
//! moving all that time is the new one refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A response whose client took no chunk for this long may be cut for a new one: short, so
/// that a scraper coming in among clients that stopped reading waits at most this long, yet
/// a client reading 256 KiB a second still takes a chunk every 250 ms.
pub const STALLED: Duration = Duration::from_millis(250);

pub struct InFlight {
    max: usize,
    epoch: Instant,
    sending: Mutex<HashMap<u64, Sending>>,
    next: AtomicU64,
    /// A place was freed.
    freed: Notify,
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
            freed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A place for a response on the connection `cut` closes. At the cap, the place of the
    /// response that has gone longest without its client taking a chunk, once that is
    /// [`STALLED`] (waiting for it, or for a place to free, at most [`STALLED`]); None when
    /// every response kept moving all that time.
    pub async fn admit(self: &Arc<Self>, cut: Arc<Notify>) -> Option<(Place, Admitted)> {
        let given_up = Instant::now() + STALLED;
        loop {
            let freed = self.freed.notified();
            let next_stall = match self.try_admit(&cut) {
                Ok(admitted) => return Some(admitted),
                Err(next_stall) => next_stall,
            };
            if Instant::now() >= given_up {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_stall.min(given_up)) => {}
                _ = freed => {}
            }
        }
    }

    /// A place now, or when the response that moved longest ago will count as stalled.
    fn try_admit(self: &Arc<Self>, cut: &Arc<Notify>) -> Result<(Place, Admitted), Instant> {
        let now = self.now_ms();
        let stalled_ms = STALLED.as_millis() as u64;
        let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        let mut how = Admitted::Free;
        if sending.len() >= self.max {
            let oldest = sending
                .iter()
                .map(|(id, s)| (s.moved.load(Ordering::Relaxed), *id))
                .min();
            match oldest {
                Some((moved, id)) if now.saturating_sub(moved) >= stalled_ms => {
                    if let Some(s) = sending.remove(&id) {
                        // notify_one keeps a permit if the connection's task is not waiting yet.
                        s.cut.notify_one();
                    }
                    how = Admitted::StalledCut;
                }
                Some((moved, _)) => {
                    return Err(self.epoch + Duration::from_millis(moved + stalled_ms))
                }
                // Only with a cap of 0, which the flag refuses: waited out, then refused.
                None => return Err(Instant::now() + STALLED),
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let moved = Arc::new(AtomicU64::new(now));
        sending.insert(
            id,
            Sending {
                moved: moved.clone(),
                cut: cut.clone(),
            },
        );
        let place = Place {
            id,
            moved,
            inflight: self.clone(),
        };
        Ok((place, how))
    }
}

impl Place {
    /// Its client took a chunk: the response is moving.
    pub fn moved(&self) {
        self.moved.store(self.inflight.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Place {
    /// Dropped with its body: sent, or its connection gone. A response cut for another
    /// (its place already given away) hands the memory its body freed back to the system,
    /// as a response cut at the write timeout does.
    fn drop(&mut self) {
        let mut sending = self
            .inflight
            .sending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if sending.remove(&self.id).is_some() {
            self.inflight.freed.notify_waiters();
        } else {
            drop(sending);
            crate::metrics::process::release_freed_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn was_cut(n: &Notify) -> bool {
        n.notified().now_or_never().is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_stalled_response_is_cut_and_a_moving_one_never() {
        let inflight = InFlight::new(2);
        let cuts: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let start = Instant::now();
        let (first, how) = inflight.admit(cuts[0].clone()).await.unwrap();
        assert_eq!(how, Admitted::Free);
        tokio::time::advance(STALLED * 3 / 10).await;
        let (second, _) = inflight.admit(cuts[1].clone()).await.unwrap();
        tokio::time::advance(STALLED * 6 / 10).await;
        second.moved();

        // At the cap with none stalled yet, a third waits until the first has taken nothing
        // for STALLED, and takes its place; the second (moving) is kept.
        let (third, how) = inflight.admit(cuts[2].clone()).await.unwrap();
        assert_eq!(how, Admitted::StalledCut);
        assert_eq!(start.elapsed(), STALLED);
        assert!(
            was_cut(&cuts[0]),
            "the stalled response's connection is closed"
        );
        assert!(!was_cut(&cuts[1]), "a moving response is never cut");
        // Its place was given away: dropping the cut response frees nothing twice.
        drop(first);
        assert_eq!(inflight.sending.lock().unwrap().len(), 2);

        // A place freed while one waits is taken at once.
        let waiting = tokio::spawn({
            let (inflight, cut) = (inflight.clone(), cuts[3].clone());
            async move {
                let (place, how) = inflight.admit(cut).await.unwrap();
                (place, how, Instant::now())
            }
        });
        tokio::time::advance(STALLED / 10).await;
        drop(third);
        let (_fourth, how, at) = waiting.await.unwrap();
        assert_eq!((how, at - start), (Admitted::Free, STALLED * 11 / 10));
        assert!(!was_cut(&cuts[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn while_every_response_moves_a_new_one_is_refused_after_waiting() {
        let inflight = InFlight::new(1);
        let (moving, _) = inflight.admit(Arc::new(Notify::new())).await.unwrap();
        let moving = Arc::new(moving);
        let reader = tokio::spawn({
            let moving = moving.clone();
            async move {
                loop {
                    tokio::time::sleep(STALLED / 5).await;
                    moving.moved();
                }
            }
        });
        let start = Instant::now();
        assert!(inflight.admit(Arc::new(Notify::new())).await.is_none());
        assert_eq!(start.elapsed(), STALLED);
        reader.abort();
    }
}
