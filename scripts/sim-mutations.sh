#!/usr/bin/env bash
# Proof that the simulator's checks can fail: builds tandem-sim with each deliberate bug
# (a cargo feature of tandem-replication or tandem-table, forwarded by tandem-sim) and asserts
# that seeds 0..N catch it; where a check is named, the failure must be of that check (so that
# an unrelated failure does not pass for the mutation's). Seeds are deterministic, so each
# bound is exact for this code; the bounds carry margin over the first failing seed measured
# (docs/simulation.md).
# Usage: scripts/sim-mutations.sh   (CARGO_TARGET_DIR defaults to target/sim-mutations)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/sim-mutations}"
jobs="${SIM_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# mutation                         seeds  [check that must catch it]  (first failing seed when measured)
mutations=(
  "mutation-truncate-to-hw            50"   # seed 6
  "mutation-early-isr-removal         20"   # seed 0
  "mutation-skip-epoch-fencing        50"   # seed 2
  "mutation-ack-before-hw             20"   # seed 0
  "mutation-rejoin-without-epoch-start 2000" # seed 544 (rare; seed 889 before the table workload)
  "mutation-cas-on-committed-only      20 table-linearizable"  # seed 1 (most seeds catch it)
  "mutation-follower-ignores-token     20 session-reads"       # seed 0 (most seeds catch it)
  "mutation-linearizable-without-epoch-start 600 table-linearizable" # seed 173 (about 1 seed in 80)
  "mutation-table-ignores-truncation  20 table-matches-log"   # seed 0 (most seeds catch it)
  "mutation-ignore-truncated-token    150 session-reads"      # seed 13 (about 1 seed in 25)
  "mutation-snapshot-skips-crc        150 table-matches-log"  # seed 44 (about 1 seed in 20; seed 1 before scans)
  "mutation-scan-sees-uncommitted     20 scan-reads"          # seed 0 (about 1 seed in 2)
  "mutation-ignore-compaction-horizon 600 table-matches-log"  # seed 138 (about 1 seed in 75)
)

failed=0
for entry in "${mutations[@]}"; do
  read -r feature seeds check <<<"$entry"
  echo "== $feature: must be caught within $seeds seeds${check:+ by $check}"
  cargo build -q --release -p tandem-sim --features "$feature"
  start=$(date +%s)
  if [ -z "${check:-}" ]; then
    if out=$("$CARGO_TARGET_DIR/release/tandem-sim" --seeds "$seeds" --from 0 --jobs "$jobs" 2>&1); then
      echo "NOT CAUGHT: $feature passed $seeds seeds"
      failed=1
    else
      echo "$out" | grep -m1 -E '^seed [0-9]+ failed' || true
      echo "caught in $(( $(date +%s) - start )) s"
    fi
  else
    out=$("$CARGO_TARGET_DIR/release/tandem-sim" --seeds "$seeds" --from 0 --jobs "$jobs" --keep-going 2>&1) || true
    if caught=$(echo "$out" | grep -m1 -E "^seed [0-9]+ failed: $check:"); then
      echo "$caught"
      echo "caught in $(( $(date +%s) - start )) s"
    else
      echo "NOT CAUGHT: $feature: no seed of $seeds failed $check"
      failed=1
    fi
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "some mutations were not caught"
  exit 1
fi
echo "all mutations caught"
