//! openraft's async runtime for the controller: tokio, as openraft's own `TokioRuntime`, except
//! for the random numbers behind Raft's election timeouts. Those come from a per-thread
//! generator that the deterministic simulator seeds ([`seed_election_rng`]), so that a seed
//! replays the same elections; a server seeds it from the OS at first use.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// [`TokioRuntime`] with a seedable election-timeout generator.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ControllerRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for ControllerRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = ElectionRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ElectionRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

thread_local! {
    /// SplitMix64 state; `None` until seeded or first used.
    static ELECTION_RNG: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Seeds this thread's election-timeout generator: every Raft driven from this thread draws
/// the same timeouts after the same seed (the simulator runs a whole cluster on one thread).
pub fn seed_election_rng(seed: u64) {
    ELECTION_RNG.with(|state| state.set(Some(seed)));
}

fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per thread, and differs per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x7A4D_E3C0);
    hasher.finish()
}

/// A handle on this thread's generator, as `rand::rngs::ThreadRng` is on rand's.
#[derive(Debug, Clone, Copy)]
pub struct ElectionRng;

impl rand::RngCore for ElectionRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        ELECTION_RNG.with(|state| {
            let s = state
                .get()
                .unwrap_or_else(os_seed)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(Some(s));
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_timeouts_again() {
        let draw = || {
            (0..8)
                .map(|_| ElectionRng.gen_range(150u64..300))
                .collect::<Vec<_>>()
        };
        seed_election_rng(7);
        let first = draw();
        seed_election_rng(7);
        assert_eq!(first, draw());
        seed_election_rng(8);
        assert_ne!(first, draw());
        assert!(first.iter().all(|t| (150..300).contains(t)));
    }
}
