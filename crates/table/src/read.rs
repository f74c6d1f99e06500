//! Which replica may answer a read, at the consistency the client chose (DESIGN.md
//! "Key-value tables" and rule 8). Pure: the server fills a [`ReadView`] from its replica.

use tandem_storage::EpochCache;

/// A write's place in the log: its offset and the leader epoch it was written in. Reads
/// return one too (the last offset the replica applied), so that a client can ask later
/// reads to be at least as fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token {
    pub offset: i64,
    pub leader_epoch: i32,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// From the leader, while it holds its lease, once its HW covers its own epoch: sees every
    /// write acknowledged before the read began.
    Linearizable,
    /// From the leader, without the lease check: may be stale if it was just deposed.
    Leader,
    /// From any replica; optionally no further behind the leader than these bounds.
    Follower {
        max_lag_offsets: Option<i64>,
        max_lag_ms: Option<i64>,
    },
    /// From any replica that has applied the token's write.
    AtLeast(Token),
}

/// What the replica knows when a read arrives.
#[derive(Debug, Clone, Copy)]
pub struct ReadView<'a> {
    pub is_leader: bool,
    /// The node's lease from the controller is valid (rule 8).
    pub has_lease: bool,
    /// Offsets below are applied to the table.
    pub high_watermark: i64,
    /// On the leader: the first offset of its epoch.
    pub epoch_start_offset: Option<i64>,
    /// The leader's LEO as last known here (on the leader, its own).
    pub leader_log_end_offset: Option<i64>,
    /// How long since this replica was last caught up with the leader's LEO (0 on the leader;
    /// `None` if it never was in this epoch).
    pub ms_since_caught_up: Option<i64>,
    pub log_start_offset: i64,
    /// The log's compaction horizon: below it, no state is served (docs/tables.md).
    pub compaction_horizon: i64,
    pub epochs: &'a EpochCache,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("the leader's lease from the controller has lapsed: it may have been replaced")]
    LeaseExpired,
    #[error("the new leader's HW {high_watermark} has not reached its epoch's start {epoch_start_offset} yet")]
    NotYetCommitted {
        high_watermark: i64,
        epoch_start_offset: i64,
    },
    #[error("this replica is too far behind the leader ({lag_offsets:?} offsets, {lag_ms:?} ms)")]
    TooStale {
        lag_offsets: Option<i64>,
        lag_ms: Option<i64>,
    },
    #[error("this replica has applied offsets below {high_watermark}, not yet the token's offset {token_offset}")]
    Behind {
        high_watermark: i64,
        token_offset: i64,
    },
    #[error("the write at offset {} of epoch {} was truncated (epoch {found:?} holds that offset now)", token.offset, token.leader_epoch)]
    TokenTruncated { token: Token, found: Option<i32> },
    #[error("this replica is copying a compacted log: applied below {high_watermark}, whole only from {compaction_horizon}")]
    Copying {
        high_watermark: i64,
        compaction_horizon: i64,
    },
}

impl ReadError {
    /// Worth waiting for on this replica (an at-least read parks until its deadline).
    pub fn may_wait(&self) -> bool {
        matches!(
            self,
            ReadError::Behind { .. }
                | ReadError::NotYetCommitted { .. }
                | ReadError::Copying { .. }
        )
    }
}

/// May this replica answer now?
pub fn check(consistency: Consistency, view: &ReadView) -> Result<(), ReadError> {
    // A table below its log's compaction horizon holds a state its log cannot vouch for
    // (emptied to copy a compacted log, or not yet through it): nobody is served from it.
    if view.high_watermark < view.compaction_horizon {
        return Err(ReadError::Copying {
            high_watermark: view.high_watermark,
            compaction_horizon: view.compaction_horizon,
        });
    }
    match consistency {
        Consistency::Linearizable => {
            // Mutation (tandem-sim's linearizability check): a new leader answers before its HW
            // reaches its epoch's start, so its committed map may lack acknowledged writes.
            #[cfg(feature = "mutation-linearizable-without-epoch-start")]
            let view = &ReadView {
                epoch_start_offset: None,
                ..*view
            };
            leader_caught_up(view)?;
            if !view.has_lease {
                return Err(ReadError::LeaseExpired);
            }
            Ok(())
        }
        Consistency::Leader => leader_caught_up(view),
        Consistency::Follower {
            max_lag_offsets,
            max_lag_ms,
        } => {
            if view.is_leader {
                return Ok(());
            }
            let lag_offsets = view
                .leader_log_end_offset
                .map(|leo| (leo - view.high_watermark).max(0));
            let lag_ms = view.ms_since_caught_up;
            let over = |lag: Option<i64>, max: Option<i64>| match (lag, max) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(lag), Some(max)) => lag > max,
            };
            if over(lag_offsets, max_lag_offsets) || over(lag_ms, max_lag_ms) {
                return Err(ReadError::TooStale {
                    lag_offsets,
                    lag_ms,
                });
            }
            Ok(())
        }
        Consistency::AtLeast(token) => {
            // Mutation (tandem-sim's session check): answer without having applied the token.
            if cfg!(feature = "mutation-follower-ignores-token") {
                return Ok(());
            }
            if view.high_watermark <= token.offset {
                return Err(ReadError::Behind {
                    high_watermark: view.high_watermark,
                    token_offset: token.offset,
                });
            }
            // Below the log start the write is long committed (retention removed it).
            if token.offset < view.log_start_offset {
                return Ok(());
            }
            let found = view.epochs.epoch_for_offset(token.offset);
            // Mutation (tandem-sim's session check): serve a token whose write was truncated.
            #[cfg(not(feature = "mutation-ignore-truncated-token"))]
            let truncated = found != Some(token.leader_epoch);
            #[cfg(feature = "mutation-ignore-truncated-token")]
            let truncated = false;
            if truncated {
                return Err(ReadError::TokenTruncated { token, found });
            }
            Ok(())
        }
    }
}

fn leader_caught_up(view: &ReadView) -> Result<(), ReadError> {
    if !view.is_leader {
        return Err(ReadError::NotLeader);
    }
    match view.epoch_start_offset {
        Some(start) if view.high_watermark < start => Err(ReadError::NotYetCommitted {
            high_watermark: view.high_watermark,
            epoch_start_offset: start,
        }),
        _ => Ok(()),
    }
}

/// The token a read returns: the last offset applied, with its epoch (`None` while nothing
/// is applied).
pub fn read_token(view: &ReadView) -> Option<Token> {
    let offset = view.high_watermark - 1;
    if offset < view.log_start_offset.max(0) {
        return None;
    }
    view.epochs
        .epoch_for_offset(offset)
        .map(|leader_epoch| Token {
            offset,
            leader_epoch,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs() -> EpochCache {
        let mut e = EpochCache::new();
        e.assign(1, 0).unwrap();
        e.assign(3, 10).unwrap();
        e
    }

    fn leader(epochs: &EpochCache) -> ReadView<'_> {
        ReadView {
            is_leader: true,
            has_lease: true,
            high_watermark: 20,
            epoch_start_offset: Some(10),
            leader_log_end_offset: Some(25),
            ms_since_caught_up: Some(0),
            log_start_offset: 0,
            compaction_horizon: 0,
            epochs,
        }
    }

    fn follower(epochs: &EpochCache) -> ReadView<'_> {
        ReadView {
            is_leader: false,
            has_lease: true,
            epoch_start_offset: None,
            ms_since_caught_up: Some(300),
            ..leader(epochs)
        }
    }

    /// Below the log's compaction horizon no consistency is served (docs/tables.md).
    #[test]
    fn nothing_is_served_below_the_compaction_horizon() {
        let e = epochs();
        for view in [leader(&e), follower(&e)] {
            let copying = ReadView {
                compaction_horizon: 21,
                ..view
            };
            let at = ReadView {
                compaction_horizon: 20,
                ..view
            };
            for consistency in [
                Consistency::Linearizable,
                Consistency::Leader,
                Consistency::Follower {
                    max_lag_offsets: None,
                    max_lag_ms: None,
                },
                Consistency::AtLeast(Token {
                    offset: 12,
                    leader_epoch: 3,
                }),
            ] {
                let refused = check(consistency, &copying);
                assert!(
                    matches!(refused, Err(ReadError::Copying { .. })),
                    "{consistency:?}: {refused:?}"
                );
                assert!(refused.unwrap_err().may_wait());
                assert!(!matches!(
                    check(consistency, &at),
                    Err(ReadError::Copying { .. })
                ));
            }
        }
    }

    #[test]
    fn linearizable_needs_leader_lease_and_epoch_start() {
        let e = epochs();
        assert_eq!(check(Consistency::Linearizable, &leader(&e)), Ok(()));
        let no_lease = ReadView {
            has_lease: false,
            ..leader(&e)
        };
        assert_eq!(
            check(Consistency::Linearizable, &no_lease),
            Err(ReadError::LeaseExpired)
        );
        assert_eq!(check(Consistency::Leader, &no_lease), Ok(()));
        let new_leader = ReadView {
            high_watermark: 9,
            ..leader(&e)
        };
        let err = check(Consistency::Linearizable, &new_leader).unwrap_err();
        assert!(err.may_wait(), "{err}");
        assert_eq!(check(Consistency::Leader, &new_leader), Err(err));
        assert_eq!(
            check(Consistency::Linearizable, &follower(&e)),
            Err(ReadError::NotLeader)
        );
    }

    #[test]
    fn follower_reads_respect_the_lag_bounds() {
        let e = epochs();
        let f = follower(&e);
        let any = Consistency::Follower {
            max_lag_offsets: None,
            max_lag_ms: None,
        };
        assert_eq!(check(any, &f), Ok(()));
        let offsets = |max| Consistency::Follower {
            max_lag_offsets: Some(max),
            max_lag_ms: None,
        };
        assert_eq!(check(offsets(5), &f), Ok(()));
        assert!(matches!(
            check(offsets(4), &f),
            Err(ReadError::TooStale {
                lag_offsets: Some(5),
                ..
            })
        ));
        let ms = |max| Consistency::Follower {
            max_lag_offsets: None,
            max_lag_ms: Some(max),
        };
        assert_eq!(check(ms(300), &f), Ok(()));
        assert!(check(ms(299), &f).is_err());
        let never = ReadView {
            ms_since_caught_up: None,
            ..f
        };
        assert!(check(ms(1_000_000), &never).is_err());
        assert_eq!(check(ms(0), &leader(&e)), Ok(()));
    }

    #[test]
    fn at_least_waits_for_the_token_and_detects_truncated_writes() {
        let e = epochs();
        let f = follower(&e);
        let token = |offset, leader_epoch| {
            Consistency::AtLeast(Token {
                offset,
                leader_epoch,
            })
        };
        assert_eq!(check(token(19, 3), &f), Ok(()));
        assert_eq!(check(token(5, 1), &f), Ok(()));
        let behind = check(token(20, 3), &f).unwrap_err();
        assert!(behind.may_wait());
        // An acks=1 write at offset 12 in epoch 2 was replaced by epoch 3's.
        assert_eq!(
            check(token(12, 2), &f),
            Err(ReadError::TokenTruncated {
                token: Token {
                    offset: 12,
                    leader_epoch: 2
                },
                found: Some(3)
            })
        );
        let retained = ReadView {
            log_start_offset: 15,
            ..f
        };
        assert_eq!(check(token(12, 2), &retained), Ok(()));
    }

    #[test]
    fn reads_return_the_last_applied_offset_as_token() {
        let e = epochs();
        assert_eq!(
            read_token(&leader(&e)),
            Some(Token {
                offset: 19,
                leader_epoch: 3
            })
        );
        let empty = ReadView {
            high_watermark: 0,
            ..leader(&e)
        };
        assert_eq!(read_token(&empty), None);
    }
}
