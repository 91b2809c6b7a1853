//! The upload bandwidth cap: a token bucket over the configured
//! (time-of-day) rate.

use std::time::{Duration, Instant};

use ferry_protocol::chunk::CHUNK_MAX;
use ferry_protocol::clock::{Clock, SystemClock};

use crate::config::BandwidthConfig;

/// A token bucket over the configured (time-of-day) rate.
#[derive(Debug)]
pub(crate) struct Limiter {
    cfg: BandwidthConfig,
    state: tokio::sync::Mutex<(Instant, f64)>,
}

impl Limiter {
    pub(crate) fn new(cfg: BandwidthConfig) -> Limiter {
        Limiter { cfg, state: tokio::sync::Mutex::new((Instant::now(), 0.0)) }
    }

    pub(crate) async fn take(&self, n: u64) {
        let now = SystemClock.now_ms().div_euclid(1000);
        let minute = self.cfg.timezone.minute_of_day(now);
        let rate = self.cfg.rate_at(minute);
        if rate == 0 {
            return;
        }
        let burst = (rate as f64 / 4.0).max(f64::from(CHUNK_MAX));
        let mut st = self.state.lock().await;
        let now = Instant::now();
        st.1 = (st.1 + now.duration_since(st.0).as_secs_f64() * rate as f64).min(burst);
        st.0 = now;
        st.1 -= n as f64;
        if st.1 < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-st.1 / rate as f64)).await;
        }
    }
}
