#!/usr/bin/env bash
# What a newcomer sees: this checkout installed with no extras (not editable) into a brand-new
# virtualenv, then `fastq demo` and `fastq doctor` run from an empty directory. Fails,
# showing the output, when either fails or says WARNING, warning, Error or Traceback.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
# ~20 s of demo on a 2-core machine, most of it starting the worker process twice
DEMO_ARGS=${DEMO_ARGS:-"-n 5000 --runs 2"}

work=$(mktemp -d "${TMPDIR:-/tmp}/fastq-fresh-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A copy of the tracked and new files only: no build/, *.so or egg-info of the checkout
# leaks into the install, and the checkout gets none of the build's.
mkdir "$work/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' path; do
            [ -e "$path" ] && printf '%s\0' "$path"
        done | xargs -0 cp --parents -t "$work/src")
else
    cp -r "$repo/." "$work/src"
fi

# The user's settings would change what the demo does; the speedups switches stay, so
# CI's FASTQ_REQUIRE_SPEEDUPS=1 also makes a failed C build fail here.
for name in $(env | sed -n 's/^\(FASTQ_[A-Za-z0-9_]*\)=.*/\1/p'); do
    case "$name" in
        FASTQ_NO_SPEEDUPS | FASTQ_REQUIRE_SPEEDUPS) ;;
        *) unset "$name" ;;
    esac
done
unset PYTHONPATH

echo "ci/fresh_install.sh: pip install $repo (a copy; no extras) into a new virtualenv"
"$PYTHON" -m venv "$work/venv"
if ! "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$work/src" \
        >"$work/install.log" 2>&1; then
    echo "ci/fresh_install.sh: pip install failed:" >&2
    cat "$work/install.log" >&2
    exit 1
fi

mkdir "$work/cwd"
failed=0
run() {
    local name=$1
    shift
    echo "ci/fresh_install.sh: fastq $*"
    set +e
    (cd "$work/cwd" && "$work/venv/bin/fastq" "$@") >"$work/$name.log" 2>&1
    local code=$?
    set -e
    cat "$work/$name.log"
    if [ "$code" != 0 ]; then
        echo "ci/fresh_install.sh: fastq $name exited with $code" >&2
        failed=1
    fi
    if grep -Eiq 'warning|error|traceback' "$work/$name.log"; then
        echo "ci/fresh_install.sh: fastq $name said something it should not have:" >&2
        grep -Ein 'warning|error|traceback' "$work/$name.log" >&2
        failed=1
    fi
}

# shellcheck disable=SC2086  # DEMO_ARGS is a list of words
run demo demo $DEMO_ARGS
run doctor doctor

if [ "$failed" != 0 ]; then
    exit 1
fi
echo "ci/fresh_install.sh: ok"
