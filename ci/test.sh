#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# A broken C build must fail here, not quietly fall back to the pure-Python twins.
export FASTQ_REQUIRE_SPEEDUPS=1
export CI=1

# System packages, only when missing (nothing to install when they are there).
need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# rabbitmq-c, for the compiled AMQP binding
pkg-config --exists librabbitmq 2>/dev/null || need_apt+=(librabbitmq-dev)
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v pg_lsclusters >/dev/null 2>&1 || need_apt+=(postgresql)
command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "ci/test.sh: please install: ${need_apt[*]}" >&2
    fi
fi

bash ci/services.sh

"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'

"$PYTHON" -m ruff check fastq tests bench examples

if [ $# = 0 ]; then
    # What a user gets from `pip install`: the binary wheel carries rabbitmq-c (checked in
    # a fresh virtualenv against RabbitMQ), and a plain install with no extras runs the
    # demo without a warning.
    PYTHON="$PYTHON" bash ci/wheel.sh
    PYTHON="$PYTHON" bash ci/fresh_install.sh
fi

# The whole suite (no arguments): test files run side by side in FASTQ_TEST_PROCESSES
# processes (pytest-xdist; files sharing something on a server share a process, see
# tests/conftest.py), as most of the time is spent waiting on servers and subprocesses;
# then the tests marked serial, which act on a whole server, alone.
processes=${FASTQ_TEST_PROCESSES:-2}
suite() {
    local only=${1:+($1) and }
    # -p no:benchmark: the suite has no benchmarks (bench/test_micro.py holds them), and
    # pytest-benchmark warns under xdist, which the suite's filterwarnings turns into an error
    "$PYTHON" -m pytest -q -p no:cacheprovider -p no:benchmark -n "$processes" --dist loadfile \
        -m "${only}not serial" || return
    "$PYTHON" -m pytest -q -p no:cacheprovider -m "${only}serial"
    local serial=$?
    # 5, no test marked serial in this selection, is no failure of the suite
    [ "$serial" = 5 ] && return 0
    return "$serial"
}

set +e
if [ $# = 0 ]; then
    suite ""
    code=$?
    if [ "$code" = 0 ]; then
        # The same suite on the pure-Python twins: both implementations must agree.
        echo "ci/test.sh: again with FASTQ_NO_SPEEDUPS=1 (the pure-Python twins)"
        # Tests marked twin_neutral (pools, result stores) run no code with a compiled twin.
        FASTQ_NO_SPEEDUPS=1 FASTQ_REQUIRE_SPEEDUPS=0 suite "not twin_neutral"
        code=$?
    fi
else
    "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
    code=$?
fi
set -e
# pytest's 5 means "no tests collected": that is a failure of the suite, say so.
if [ "$code" = 5 ]; then
    echo "ci/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$code"
