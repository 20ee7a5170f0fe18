//! The one backoff of the workspace: exponential, with jitter, from backon. Model call retries,
//! MCP reconnects and the session lock's wait all pause by it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Endless pauses: `first`, doubling up to `max`, each stretched by a random 0 to 100 % (so
/// clients that failed together do not retry together).
pub fn backoff(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_within_their_jitter() {
        let first = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let pauses: Vec<Duration> = backoff(first, max).take(6).collect();
        for (index, pause) in pauses.iter().enumerate() {
            let delay = (first * 2u32.pow(index as u32)).min(max);
            assert!(
                *pause >= delay && *pause <= delay * 2,
                "pause {index}: {pause:?} for a delay of {delay:?}"
            );
        }
    }
}
