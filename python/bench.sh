#!/usr/bin/env bash
# Python against the Rust API in the same run (see bench.py): builds the wheel and the Rust
# stream benchmark in release, installs the wheel in a fresh venv and runs bench.py.
# Usage: python/bench.sh [bench.py arguments, e.g. --rounds 3 --stream-mib 1024]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/python-bench/venv"
wheels="$target/python-bench/wheels"

# bench.py reuses the tests' node set-up (conftest.py, which imports pytest).
# The CLI sets the nodes up (init, dev chain registration); the Rust side is the stream bench.
cargo build --release --bin hermes --manifest-path "$root/Cargo.toml"
rust_bench=$(cargo bench --bench stream --no-run --message-format=json \
        --manifest-path "$root/Cargo.toml" 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "stream" and m.get("executable"):
        print(m["executable"])')
rm -rf "$venv" "$wheels"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.5,<2" "pytest>=8"
"$venv/bin/maturin" build --release --manifest-path "$here/Cargo.toml" --out "$wheels" \
    --interpreter "$(command -v python3)"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$wheels"/hermes_p2p-*.whl
cd "$here"
HERMES_BIN="$target/release/hermes" exec "$venv/bin/python" bench.py --rust-bench "$rust_bench" "$@"
