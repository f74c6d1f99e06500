#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, then runs them.
#
#   scripts/test.sh                  everything
#   scripts/test.sh --install-only   only the Kafka clients the compat tests drive
#   scripts/test.sh ARGS...          ARGS go to `cargo test --workspace --locked`
#
# The compat tests (crates/tandem/tests/compat.rs) drive real Kafka clients nobody here wrote:
# Debian's kcat, and kafka-python and confluent-kafka (librdkafka) from PyPI, pinned below and
# installed into a venv under the cargo target dir. Each is installed only if missing, so a
# second run costs a few stat calls. An install that fails does not stop the suite: the compat
# tests then fail loudly, naming what is missing (the rest of the suite is unaffected).
#
# The dashboard's browser test (crates/tandem/tests/dashboard.rs) drives Debian's chromium
# through chromedriver (package chromium-driver), installed the same way when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA_PYTHON_VERSION=3.0.12
CONFLUENT_KAFKA_VERSION=2.16.1

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
target_dir="$(cd "$target_dir" && pwd)"
venv="$target_dir/compat-venv"
install_log="$target_dir/compat-install.log"

install_kcat() {
    command -v kcat >/dev/null 2>&1 && return 0
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "compat: installing kcat (Debian)" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >>"$install_log" 2>&1 &&
        "${sudo[@]}" apt-get install -y -qq kcat >>"$install_log" 2>&1
}

install_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "dashboard test: installing chromium and chromium-driver (Debian)" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >>"$install_log" 2>&1 &&
        "${sudo[@]}" apt-get install -y -qq chromium chromium-driver >>"$install_log" 2>&1
}

install_python_clients() {
    local python="$venv/bin/python"
    if [ -x "$python" ] && "$python" - "$KAFKA_PYTHON_VERSION" "$CONFLUENT_KAFKA_VERSION" <<'EOF' 2>/dev/null
import sys, kafka, confluent_kafka
assert kafka.__version__ == sys.argv[1], kafka.__version__
assert confluent_kafka.__version__ == sys.argv[2], confluent_kafka.__version__
EOF
    then
        return 0
    fi
    echo "compat: installing kafka-python $KAFKA_PYTHON_VERSION and confluent-kafka $CONFLUENT_KAFKA_VERSION (PyPI) into $venv" >&2
    { [ -x "$python" ] || python3 -m venv "$venv"; } >>"$install_log" 2>&1 &&
        "$python" -m pip install --quiet --disable-pip-version-check --only-binary confluent-kafka \
            "kafka-python==$KAFKA_PYTHON_VERSION" "confluent-kafka==$CONFLUENT_KAFKA_VERSION" \
            >>"$install_log" 2>&1
}

compat_failed=()
install_kcat || compat_failed+=("kcat")
install_python_clients || compat_failed+=("kafka-python/confluent-kafka")
if [ ${#compat_failed[@]} -gt 0 ]; then
    echo "compat: could not install ${compat_failed[*]} (see $install_log); the compat tests will fail" >&2
    export TANDEM_COMPAT_INSTALL_FAILED="${compat_failed[*]} (see $install_log)"
fi
if ! install_browser; then
    echo "dashboard test: could not install chromium/chromium-driver (see $install_log); the browser test will fail" >&2
    export TANDEM_BROWSER_INSTALL_FAILED="chromium chromium-driver (see $install_log)"
fi
# The compat tests find the clients here (and fall back to the same paths when run alone).
export TANDEM_COMPAT_PYTHON="$venv/bin/python"

if [ "${1:-}" = "--install-only" ]; then
    [ ${#compat_failed[@]} -eq 0 ] && [ -z "${TANDEM_BROWSER_INSTALL_FAILED:-}" ]
    exit
fi
cargo test --workspace --locked "$@"
