#!/usr/bin/env bash
# Builds the hermes-p2p wheel with maturin in a fresh venv, installs it and runs the pytest
# suite against real nodes on loopback (a Python node and the `hermes` CLI of this workspace).
#
# The wheel is built in the dev profile into the workspace's target/, so it reuses the
# dependencies `cargo build` compiled there; only pyo3 and this crate are compiled on top.
# Usage: python/ci.sh (from anywhere). Exit code: pytest's; "no tests collected" (5) fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/python-ci/venv"
wheels="$target/python-ci/wheels"
start=$(date +%s)

# The Rust node of the tests: the CLI of this workspace. .ci/test passes the one its workspace
# test run has just built (building it here with other features would compile much of the
# dependency tree a second time).
if [ -z "${HERMES_BIN:-}" ]; then
    cargo build --bin hermes --manifest-path "$root/Cargo.toml"
    HERMES_BIN="$target/debug/hermes"
fi
export HERMES_BIN

rm -rf "$venv" "$wheels"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "maturin>=1.5,<2" "pytest>=8" "pytest-asyncio>=1" numpy "bittensor-wallet>=4,<5"
# Built against the system interpreter (the wheel is abi3, any 3.11+ does): a fresh venv's
# interpreter would make pyo3's build script, and so pyo3 and this crate, rebuild every run.
"$venv/bin/maturin" build --manifest-path "$here/Cargo.toml" --out "$wheels" \
    --interpreter "${HERMES_BUILD_PYTHON:-$(command -v python3)}"
built=$(date +%s)
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$wheels"/hermes_p2p-*.whl

# Run from outside the source tree, so that the installed package is the one imported.
cd "$here/tests"
set +e
"$venv/bin/pytest" -q -p no:cacheprovider --rootdir "$here" -c "$here/pyproject.toml" .
rc=$?
set -e
echo "python: wheel built in $((built - start)) s, total $(($(date +%s) - start)) s"
if [ "$rc" -eq 5 ]; then
    echo "python: no tests collected" >&2
    exit 1
fi
exit "$rc"
