#!/usr/bin/env bash
# Thin first write (1 GiB in 1 MiB writes, then one sync) through vmfs vs the raw file, with
# what runs before each side under control: on a VM whose host takes back freed guest
# memory, a first write is as fast as the memory freed just before it reaches (see
# vmfs/README.md, "Thin first write: where the time went").
# Usage: benches/peers/vmfs-thin-write.sh MODE [BLOCK_SIZE (default 1048576)] [ROUNDS (3)]
#   alternate  vmfs, raw, vmfs, raw... (what vmfs-io.sh does)
#   cold       5 s idle before each run: free memory host-cold for both sides
#   warm       a 2 GiB first-touch run just before each: 2 GiB just freed for both sides
# OLD_BIN=path adds a run of that vmfs binary before each round's vmfs run (before/after).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:?alternate, cold or warm}
BS=${2:-1048576}
ROUNDS=${3:-3}
SECS=${SECS:-1} # seconds of each random phase of bench-io (they run after the thin write)
cargo build --release -q -p vinfra-host --bin vmfs
BIN=${CARGO_TARGET_DIR:-target}/release/vmfs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmfs-thin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cc -O2 -o "$WORK/first-touch" benches/peers/first-touch.c
one() { # BINARY TARGET LABEL
  case $MODE in
    cold) sleep 5 ;;
    warm) "$WORK/first-touch" 2048 >/dev/null ;;
  esac
  "$1" bench-io "$WORK" --mib 1024 --secs "$SECS" --target "$2" --block-size "$BS" |
    awk -v w="$3" '/seq_write/ {printf "%s=%s ", $2, $3} END {print "<- " w}'
}
echo "== $MODE, block size $BS; $(date -u +%T) $(uptime | sed 's/.*load/load/')"
for _ in $(seq "$ROUNDS"); do
  if [[ -n ${OLD_BIN:-} ]]; then one "$OLD_BIN" vmfs old; one "$BIN" raw raw; fi
  one "$BIN" vmfs vmfs
  one "$BIN" raw raw
done
echo "== end $(date -u +%T) $(uptime | sed 's/.*load/load/')"
