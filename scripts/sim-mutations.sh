#!/usr/bin/env bash
# Proof that the simulator's checks can fail: builds tandem-sim with each deliberate bug
# (a cargo feature of tandem-replication, forwarded by tandem-sim) and asserts that seeds
# 0..N catch it. Seeds are deterministic, so each bound is exact for this code; the bounds
# carry margin over the first failing seed measured (docs/simulation.md).
# Usage: scripts/sim-mutations.sh   (CARGO_TARGET_DIR defaults to target/sim-mutations)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/sim-mutations}"
jobs="${SIM_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# mutation                         seeds  (first failing seed when measured)
mutations=(
  "mutation-truncate-to-hw            50"   # seed 2
  "mutation-early-isr-removal         20"   # seed 0
  "mutation-skip-epoch-fencing        50"   # seed 6
  "mutation-ack-before-hw             20"   # seed 0
  "mutation-rejoin-without-epoch-start 2000" # seed 889 (rare: one seed in 4000 catches it)
)

failed=0
for entry in "${mutations[@]}"; do
  read -r feature seeds <<<"$entry"
  echo "== $feature: must be caught within $seeds seeds"
  cargo build -q --release -p tandem-sim --features "$feature"
  start=$(date +%s)
  if out=$("$CARGO_TARGET_DIR/release/tandem-sim" --seeds "$seeds" --from 0 --jobs "$jobs" 2>&1); then
    echo "NOT CAUGHT: $feature passed $seeds seeds"
    failed=1
  else
    echo "$out" | grep -m1 -E '^seed [0-9]+ failed' || true
    echo "caught in $(( $(date +%s) - start )) s"
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "some mutations were not caught"
  exit 1
fi
echo "all mutations caught"
