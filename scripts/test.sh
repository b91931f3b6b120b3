#!/usr/bin/env bash
# The test command: formatting, the web console's build, lints, the module import-cycle
# check, the whole test suite, the crates' cargo examples, docs, and a short run of every
# fuzz target.
# Tests that need /dev/kvm or root check for it and print "SKIP: <why>" where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental state, which would add gigabytes to
# target/ (CI's disk is limited: see the [profile.dev] note in Cargo.toml).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

# The center serves web/dist; its browser tests need it built (node 20 + npm).
step "web console: npm ci && npm run build (examples/center/web)"
(cd examples/center/web && npm ci --no-audit --no-fund && npm run build)

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "libraries and binaries build without test-only features"
# --all-targets turns on the test-utils features through dev-dependencies; this checks
# that nothing a user builds needs them.
cargo check --workspace --lib --bins

step "no import cycles between the modules of a crate"
python3 scripts/module-cycles.py vmm-core/src vmfs/src drs/src vmotion/src ha/src vcb/src examples/host/src examples/center/src examples/testkit/src

step "cargo test --workspace"
cargo test --workspace --all-targets

step "cargo examples (each crate's examples/*.rs, run)"
for example in */examples/*.rs; do
    crate="${example%%/*}"
    package="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$crate/Cargo.toml" | head -n 1)"
    name="$(basename "$example" .rs)"
    printf -- '--- %s --example %s\n' "$package" "$name"
    cargo run -q -p "$package" --example "$name"
done

step "cargo test --doc"
cargo test --workspace --doc

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# 10 s per target replays the committed corpus and explores a little (18 targets: 3 min);
# longer runs are opt-in: FUZZ_SECONDS=300 scripts/test.sh, or scripts/fuzz.sh 300 TARGET.
step "fuzz targets: ${FUZZ_SECONDS:-10} s each over fuzz/corpus (a crash fails)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

step "all tests passed"
