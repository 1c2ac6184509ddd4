//! The `concurrency` limit on accounts read at once, letting the account with the most work
//! in first. With a plain semaphore the order was arrival, in effect random: a 5,000-user
//! account that came in after the small ones started tens of seconds late and finished last,
//! and IAM's per-account rate made that lateness the first refresh's whole length.
//!
//! At start the gate can be held shut until every account has asked (or a deadline passed),
//! so the first round is ordered too; after that each freed place goes to the largest waiter.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

pub struct Gate {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: BinaryHeap<Waiter>,
    /// Arrivals so far, to let equal weights in by arrival.
    arrivals: u64,
    /// While held: how many waiters open the gate.
    held_for: Option<usize>,
}

struct Waiter {
    weight: u64,
    arrival: Reverse<u64>,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.weight, self.arrival) == (other.weight, other.arrival)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.weight, self.arrival).cmp(&(other.weight, other.arrival))
    }
}

/// A place inside; dropping it lets the next waiter in.
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter's side while it waits: if it is dropped (its task stopped) after being let in
/// but before it noticed, the place is passed on rather than lost.
struct Waiting {
    gate: Arc<Gate>,
    wake: oneshot::Receiver<()>,
    admitted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.admitted && self.wake.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

impl Gate {
    pub fn new(places: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(State {
                free: places,
                waiting: BinaryHeap::new(),
                arrivals: 0,
                held_for: None,
            }),
        })
    }

    /// Keeps the gate shut until `waiters` have asked, or `at_most` has passed: the first
    /// round then goes largest first.
    pub fn hold(self: &Arc<Self>, waiters: usize, at_most: Duration) {
        self.state.lock().unwrap().held_for = Some(waiters);
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(at_most).await;
            if let Some(gate) = gate.upgrade() {
                gate.open();
            }
        });
    }

    fn open(&self) {
        let mut state = self.state.lock().unwrap();
        state.held_for = None;
        while state.free > 0 && state.admit_next() {
            state.free -= 1;
        }
    }

    /// Waits for a place; `weight` is the work expected (the largest goes first).
    pub async fn enter(self: &Arc<Self>, weight: u64) -> Permit {
        let wake = {
            let mut state = self.state.lock().unwrap();
            if state.held_for.is_none() && state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Permit { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            state.arrivals += 1;
            let arrival = Reverse(state.arrivals);
            state.waiting.push(Waiter {
                weight,
                arrival,
                wake: tx,
            });
            if state.held_for.is_some_and(|n| state.waiting.len() >= n) {
                drop(state);
                self.open();
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            wake,
            admitted: false,
        };
        // The gate keeps every sender until it uses it: this cannot fail.
        let _ = (&mut waiting.wake).await;
        waiting.admitted = true;
        Permit { gate: self.clone() }
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap();
        if state.held_for.is_some() || !state.admit_next() {
            state.free += 1;
        }
    }
}

impl State {
    /// Lets the largest waiter in; false if none is left (waiters whose task stopped are
    /// skipped).
    fn admit_next(&mut self) -> bool {
        while let Some(w) = self.waiting.pop() {
            if w.wake.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order in which waiters of these weights get in through one place.
    async fn order(weights: &[u64], held: bool) -> Vec<u64> {
        let gate = Gate::new(1);
        if held {
            gate.hold(weights.len(), Duration::from_secs(60));
        }
        let first = (!held).then(|| gate.state.lock().unwrap().free = 0);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &w in weights {
            let (gate, log) = (gate.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.enter(w).await;
                log.lock().unwrap().push(w);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::task::yield_now().await;
        }
        if first.is_some() {
            gate.release();
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = log.lock().unwrap().clone();
        order
    }

    #[tokio::test(start_paused = true)]
    async fn the_largest_waiter_goes_first_equal_ones_by_arrival() {
        assert_eq!(
            order(&[10, 5000, 200, 5000, 0], false).await,
            [5000, 5000, 200, 10, 0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_gate_opens_once_every_account_asked_then_largest_first() {
        assert_eq!(order(&[10, 200, 5000], true).await, [5000, 200, 10]);
        // Not everyone asks: the deadline opens it.
        let gate = Gate::new(2);
        gate.hold(3, Duration::from_secs(5));
        let entered = tokio::time::timeout(Duration::from_secs(6), gate.enter(1)).await;
        assert!(entered.is_ok(), "the deadline opens a held gate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_stopped_after_being_let_in_passes_its_place_on() {
        let gate = Gate::new(1);
        let holder = gate.enter(1).await;
        let stopped = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(100).await }
        });
        tokio::task::yield_now().await;
        drop(holder); // lets `stopped` in ...
        stopped.abort(); // ... which never notices
        let _ = stopped.await;
        let next = tokio::time::timeout(Duration::from_secs(1), gate.enter(1)).await;
        assert!(next.is_ok(), "the place was handed on, not lost");
    }
}
