#!/usr/bin/env bash
# vmfs over NBD side by side with the same NBD server's raw export, in one run: sequential
# thin write / overwrite / read and random 4 KiB IOPS through a vmfs file on the export
# against the same I/O on the export's blocks (both through vmfs's NbdDevice, one request
# in flight, over a Unix socket to nbdkit's memory plugin). Needs nbdkit (Debian package).
# Usage: benches/peers/vmfs-nbd.sh [MiB (default 256)] [seconds per random phase (default 3)]
# VMFS_BLOCK_SIZE (default 1048576) sets the vmfs block size.
# Not done yet (issue 11): lock acquire latency with Disk Paxos against sanlock, failover
# time over NBD.
set -euo pipefail
cd "$(dirname "$0")/../.."
MIB=${1:-256}
SECS=${2:-3}
BS=${VMFS_BLOCK_SIZE:-1048576}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p vinfra-host --bin vmfs
BIN="$CARGO_TARGET_DIR/release/vmfs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmfs-nbd.XXXXXX")
SERVER=
cleanup() {
  if [[ -n $SERVER ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A fresh export for each side: vmfs needs room for its journals and cluster table too.
serve() {
  cleanup_server
  rm -f "$WORK/nbd.sock"
  nbdkit -f -U "$WORK/nbd.sock" memory "size=$((2 * MIB + 512))M" 2>/dev/null &
  SERVER=$!
  for _ in $(seq 100); do [[ -S $WORK/nbd.sock ]] && return; sleep 0.05; done
  echo "nbdkit did not start" >&2; exit 1
}
cleanup_server() {
  if [[ -n $SERVER ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=; fi
}

declare -A OURS PEER
for round in 1 2; do
  for target in vmfs raw; do
    serve
    while read -r who key val; do
      if [[ $who == vmfs ]]; then
        [[ -z ${OURS[$key]:-} ]] || (( $(echo "$val > ${OURS[$key]}" | bc) )) && OURS[$key]=$val
      else
        [[ -z ${PEER[$key]:-} ]] || (( $(echo "$val > ${PEER[$key]}" | bc) )) && PEER[$key]=$val
      fi
    done < <("$BIN" bench-io "$WORK" --mib "$MIB" --secs "$SECS" --target "$target" --block-size "$BS" --nbd "$WORK/nbd.sock")
  done
done
cleanup_server

echo "(I/O size ${MIB} MiB, vmfs block size ${BS} B, nbdkit memory plugin over a Unix socket)"
for key in seq_write_MBps seq_overwrite_MBps seq_read_MBps rand4k_write_iops rand4k_read_iops; do
  o=${OURS[$key]}; p=${PEER[$key]}
  echo "$key: ours=$o peer=$p ratio=$(echo "scale=3; $o / $p" | bc)"
done
