//! The partition leader's side of rule 8: a lease renewed by heartbeat replies.
//!
//! The node notes when it *sent* each heartbeat; a reply granting `lease_ms` makes its
//! leaderships valid until `sent_at_ms + lease_ms` on the node's own monotonic clock. Counting
//! from the send (not the receipt) means the lease never ends later than the controller
//! believes, however slow the network was. While the lease is not valid, the node serves no
//! linearizable read and takes no write as leader; epochs still fence the data path (rule 1).

/// A node's lease, on its own monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderLease {
    valid_until_ms: Option<i64>,
}

impl LeaderLease {
    pub fn new() -> LeaderLease {
        LeaderLease::default()
    }

    /// The reply to a heartbeat sent at `sent_at_ms` granted `lease_ms` (or no lease). Replies
    /// may arrive out of order; a lease only ever extends.
    pub fn on_heartbeat_reply(&mut self, sent_at_ms: i64, lease_ms: Option<i64>) {
        if let Some(lease_ms) = lease_ms.filter(|l| *l > 0) {
            let until = sent_at_ms + lease_ms;
            if self.valid_until_ms.is_none_or(|u| u < until) {
                self.valid_until_ms = Some(until);
            }
        }
    }

    /// The controller fenced this node, or it registered again: every lease is void.
    pub fn revoke(&mut self) {
        self.valid_until_ms = None;
    }

    pub fn is_valid(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_some_and(|until| now_ms < until)
    }

    pub fn valid_until_ms(&self) -> Option<i64> {
        self.valid_until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_counts_from_the_send_and_only_extends() {
        let mut lease = LeaderLease::new();
        assert!(!lease.is_valid(0));
        lease.on_heartbeat_reply(100, Some(400));
        assert!(lease.is_valid(499));
        assert!(!lease.is_valid(500));
        // A late reply to an older heartbeat does not shorten it.
        lease.on_heartbeat_reply(50, Some(400));
        assert_eq!(lease.valid_until_ms(), Some(500));
        // A reply without a lease does not extend it.
        lease.on_heartbeat_reply(300, None);
        assert_eq!(lease.valid_until_ms(), Some(500));
        lease.on_heartbeat_reply(300, Some(400));
        assert_eq!(lease.valid_until_ms(), Some(700));
        lease.revoke();
        assert!(!lease.is_valid(301));
    }
}
