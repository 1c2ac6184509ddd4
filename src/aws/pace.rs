//! Pacing an account's IAM requests to what IAM allows.
//!
//! IAM throttles per account and does not publish its rates. Each account's reader has a
//! token bucket whose rate adapts like TCP's congestion window (AIMD): it starts at
//! `aws.requests_per_second`, grows by about one request per second every second while
//! calls succeed, and drops to 70 % when IAM answers `Throttling` (at most once a second, so
//! one burst of throttled answers counts once). A throttled call waits for the next token and
//! is sent again; it does not use up the SDK's attempts (the SDK is told not to retry
//! throttling itself), so a long burst slows a refresh down instead of failing it.
//!
//! A request that has to wait is sent at the account's next [`TICK`], not at the moment its
//! token comes: a request sent alone after a pause finds the process's caches cold and
//! costs about twice the CPU of one sent among others (measured against moto at 50
//! requests a second: 1.07 ms a request, 0.54 ms unpaced). On a one-second tick, what
//! waited goes out together, as the bucket's burst allows anyway; the rate is unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use aws_runtime::retries::classifiers::THROTTLING_ERRORS;
use aws_sdk_iam::config::retry::ClassifyRetry;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    RetryAction, RetryClassifierPriority, RetryReason,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::ErrorKind;

use super::Meter;

/// The slowest pace: one request every two seconds.
const MIN_RATE: f64 = 0.5;
/// A throttle cuts the rate to this share.
const DECREASE: f64 = 0.7;
/// Throttles closer together than this are one congestion event.
const COOLDOWN: Duration = Duration::from_secs(1);
/// Waiting requests are let through at whole multiples of this since the pace began.
const TICK: Duration = Duration::from_secs(1);
/// How many times one call may be throttled before its error is given up to the caller.
pub(super) const MAX_THROTTLED: u32 = 100;

pub struct Pace {
    max: f64,
    /// Where its ticks are counted from.
    began: Instant,
    state: Mutex<State>,
    /// Told the rate each time it changes.
    meter: Arc<dyn Meter>,
}

struct State {
    rate: f64,
    tokens: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
}

impl Pace {
    pub fn new(max: f64, meter: Arc<dyn Meter>) -> Self {
        meter.rate(max);
        Pace {
            max,
            began: Instant::now(),
            state: Mutex::new(State {
                rate: max,
                tokens: max.max(1.0),
                refilled: Instant::now(),
                last_cut: None,
            }),
            meter,
        }
    }

    /// Waits until the account may send its next request.
    async fn turn(&self) {
        let wait = {
            let mut s = self.state.lock().unwrap();
            let now = Instant::now();
            let burst = s.rate.max(1.0);
            s.tokens =
                (s.tokens + now.duration_since(s.refilled).as_secs_f64() * s.rate).min(burst);
            s.refilled = now;
            s.tokens -= 1.0;
            // A negative balance is this request's place in the queue.
            Duration::from_secs_f64((-s.tokens / s.rate).max(0.0))
        };
        if !wait.is_zero() {
            tokio::time::sleep_until(self.tick_after(Instant::now() + wait)).await;
        }
    }

    /// The first tick at or after `at`.
    fn tick_after(&self, at: Instant) -> Instant {
        let since = at.duration_since(self.began).as_nanos();
        let tick = TICK.as_nanos();
        let ticks = since.div_ceil(tick);
        self.began + Duration::from_nanos(u64::try_from(ticks * tick).unwrap_or(u64::MAX))
    }

    fn succeeded(&self) {
        let mut s = self.state.lock().unwrap();
        if s.rate < self.max {
            // +1/rate per success: about one request per second more each second.
            s.rate = (s.rate + 1.0 / s.rate).min(self.max);
            self.meter.rate(s.rate);
        }
    }

    fn throttled(&self) {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        if s.last_cut.is_some_and(|t| now.duration_since(t) < COOLDOWN) {
            return;
        }
        s.last_cut = Some(now);
        s.rate = (s.rate * DECREASE).max(MIN_RATE);
        s.tokens = s.tokens.min(0.0);
        self.meter.rate(s.rate);
    }

    /// Sends a request in its turn; a throttled one again in a later turn, at a lower rate.
    pub async fn call<T, E, R, F, Fut>(&self, mut send: F) -> Result<T, SdkError<E, R>>
    where
        E: ProvideErrorMetadata,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
    {
        let mut throttled = 0;
        loop {
            self.turn().await;
            match send().await {
                Ok(out) => {
                    self.succeeded();
                    return Ok(out);
                }
                Err(e) if is_throttling(&e) && throttled < MAX_THROTTLED => {
                    throttled += 1;
                    self.throttled();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_throttling<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::ServiceError(s) => s
            .err()
            .code()
            .is_some_and(|c| THROTTLING_ERRORS.contains(&c)),
        _ => false,
    }
}

/// Tells the SDK not to retry throttled attempts itself: `Pace::call` does, in turn.
#[derive(Debug)]
pub struct LeaveThrottlingToPace;

impl ClassifyRetry for LeaveThrottlingToPace {
    fn classify_retry(&self, _: &InterceptorContext) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(&self, _: &InterceptorContext, previous: &RetryAction) -> RetryAction {
        match previous {
            RetryAction::RetryIndicated(RetryReason::RetryableError {
                kind: ErrorKind::ThrottlingError,
                ..
            }) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Its name, so the request counter can leave it out when it asks the SDK what an attempt was.
pub const NAME: &str = "LeaveThrottlingToPace";

#[cfg(test)]
mod tests {
    use super::*;

    use crate::aws::mock::Heard;

    /// A pace, and what its meter hears.
    fn pace(max: f64) -> (Pace, Arc<Heard>) {
        let heard = Arc::new(Heard::default());
        (Pace::new(max, heard.clone()), heard)
    }

    #[test]
    fn throttles_cut_the_rate_once_a_second_and_successes_win_it_back() {
        let (p, heard) = pace(20.0);
        p.throttled();
        p.throttled();
        assert!(
            (heard.rate() - 14.0).abs() < 1e-9,
            "one cut for a burst: {}",
            heard.rate()
        );
        for _ in 0..14 {
            p.succeeded();
        }
        assert!(
            heard.rate() > 14.9 && heard.rate() < 15.1,
            "about +1 a second: {}",
            heard.rate()
        );
        for _ in 0..1000 {
            p.succeeded();
        }
        assert_eq!(heard.rate(), 20.0, "never above the configured rate");
    }

    /// The times of `n` turns, in seconds from `start`, and how many came at each.
    async fn turns(p: &Pace, start: Instant, n: usize) -> Vec<(f64, usize)> {
        let mut at: Vec<(f64, usize)> = Vec::new();
        for _ in 0..n {
            p.turn().await;
            let t = start.elapsed().as_secs_f64();
            match at.last_mut() {
                Some((last, count)) if *last == t => *count += 1,
                _ => at.push((t, 1)),
            }
        }
        at
    }

    /// Paused time: the waits are exact, and take no time.
    #[tokio::test(start_paused = true)]
    async fn turns_come_on_the_tick_at_the_rate_which_a_throttle_lowers_once_a_second() {
        let (p, heard) = pace(20.0);
        let start = Instant::now();
        // The burst at once, then what waited at each whole second: 20 a second.
        let at = turns(&p, start, 70).await;
        assert_eq!(at, [(0.0, 20), (1.0, 20), (2.0, 20), (3.0, 10)]);

        // After a throttle, what waits goes out at the next ticks, 14 a second; a second
        // throttle within the second is the same burst.
        p.throttled();
        p.throttled();
        assert_eq!(heard.rate(), 14.0);
        let at = turns(&p, start, 48).await;
        assert_eq!(at, [(4.0, 14), (5.0, 14), (6.0, 14), (7.0, 6)]);

        p.throttled();
        assert!((heard.rate() - 9.8).abs() < 1e-9, "{}", heard.rate());
    }
}
