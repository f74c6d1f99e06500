//! Choosing a partition, as Kafka's default partitioner does, so that a key lands on the same
//! partition whether a Tandem client or a Kafka client wrote it.
//!
//! - A record with a key goes to `to_positive(murmur2(key)) % partitions`.
//! - Records without a key stick to one partition until a batch for it closes, then move to
//!   another (Kafka's sticky partitioner, KIP-480): full batches instead of one record per
//!   partition per linger.

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed 0x9747b28c, over the key bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition of a keyed record among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) as u32 % partitions
}

/// Picks partitions for records, keyed or not. Deterministic given its seed.
#[derive(Debug, Clone)]
pub struct Partitioner {
    /// The partition unkeyed records stick to, per topic, until its batch closes.
    sticky: std::collections::BTreeMap<String, u32>,
    rng: u64,
}

impl Partitioner {
    pub fn new(seed: u64) -> Partitioner {
        Partitioner {
            sticky: Default::default(),
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough to spread load, and reproducible in tests and simulation.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The partition for a record of `topic` with `key`, among `partitions`.
    pub fn partition(&mut self, topic: &str, key: Option<&[u8]>, partitions: u32) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        match self.sticky.get(topic) {
            Some(&p) if p < partitions => p,
            _ => {
                let p = (self.next_random() % partitions as u64) as u32;
                self.sticky.insert(topic.to_string(), p);
                p
            }
        }
    }

    /// A batch of `topic`'s sticky partition closed: move unkeyed records elsewhere.
    pub fn batch_closed(&mut self, topic: &str, partition: u32, partitions: u32) {
        if self.sticky.get(topic) != Some(&partition) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            // Any partition but the current one.
            let step = 1 + (self.next_random() % (partitions as u64 - 1)) as u32;
            (partition + step) % partitions
        };
        self.sticky.insert(topic.to_string(), next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_vectors() {
        // org.apache.kafka.common.utils.UtilsTest.testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keyed_records_always_land_on_the_same_partition() {
        let mut p = Partitioner::new(1);
        let first = p.partition("t", Some(b"user-42"), 12);
        for _ in 0..10 {
            assert_eq!(p.partition("t", Some(b"user-42"), 12), first);
        }
        assert_eq!(first, partition_for_key(b"user-42", 12));
    }

    #[test]
    fn unkeyed_records_stick_until_their_batch_closes() {
        let mut p = Partitioner::new(7);
        let first = p.partition("t", None, 6);
        assert_eq!(p.partition("t", None, 6), first);
        p.batch_closed("t", (first + 1) % 6, 6);
        assert_eq!(
            p.partition("t", None, 6),
            first,
            "another partition's batch changes nothing"
        );
        p.batch_closed("t", first, 6);
        let second = p.partition("t", None, 6);
        assert_ne!(second, first, "moves on after its batch closed");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let now = p.partition("t", None, 6);
            seen.insert(now);
            p.batch_closed("t", now, 6);
        }
        assert_eq!(seen.len(), 6, "over time every partition gets batches");
    }
}
