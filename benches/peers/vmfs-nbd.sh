#!/usr/bin/env bash
# vmfs over NBD side by side with the same NBD server's raw export, in one run: sequential
# thin write / overwrite / read and random 4 KiB IOPS through a vmfs file on the export
# against the same I/O on the export's blocks (both through vmfs's NbdDevice, one request
# in flight, over a Unix socket to nbdkit's memory plugin). Needs nbdkit (Debian package).
# Usage: benches/peers/vmfs-nbd.sh [MiB (default 256)] [seconds per random phase (default 3)]
# VMFS_BLOCK_SIZE (default 1048576) sets the vmfs block size.
# ROUNDS (default 3): ours and the peer alternate this many times, each on a fresh export;
# each keeps its best. With one request in flight, each request is a ping-pong between
# this process and nbdkit on 2 vCPUs, and where the scheduler puts the two swings a
# round by up to 2x (vmfs/README.md, "vmfs over NBD").
# Then uncontended lock acquire+release (one lock record, host 0; `vmfs bench-lock`, I/Os
# counted at the device under the lock protocol): compare-and-write on an image file (the
# ATS path), Disk Paxos on an image file, Disk Paxos over NBD (TCP on loopback and a Unix
# socket), with Disk Paxos areas for LOCK_HOSTS hosts (default 8).
# Against sanlock: benches/peers/vmfs-sanlock.sh. Failover over NBD is measured by
# vmfs/tests/paxos_nbd.rs.
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
for round in $(seq "${ROUNDS:-3}"); do
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

# Lock figures. Each side gets a fresh volume.
LOCK_HOSTS=${LOCK_HOSTS:-8}
LOCK_N=${LOCK_N:-2000}
lock_bench() { # label target
  "$BIN" bench-lock "$2" --n "$LOCK_N" | sed "s/^/lock $1: /"
}
rm -f "$WORK/ats.img" "$WORK/paxos.img"
"$BIN" mkfs "$WORK/ats.img" --size 512M >/dev/null
lock_bench ats_file "$WORK/ats.img"
"$BIN" mkfs "$WORK/paxos.img" --size 512M --disk-paxos "$LOCK_HOSTS" >/dev/null
lock_bench disk_paxos_file "$WORK/paxos.img"
rm -f "$WORK/ats.img" "$WORK/paxos.img"
serve
"$BIN" mkfs "nbd+unix://$WORK/nbd.sock" --disk-paxos "$LOCK_HOSTS" >/dev/null
lock_bench disk_paxos_nbd_unix "nbd+unix://$WORK/nbd.sock"
cleanup_server
PORT=${NBD_PORT:-10809}
nbdkit -f -i 127.0.0.1 -p "$PORT" memory "size=$((2 * MIB + 512))M" 2>/dev/null &
SERVER=$!
for _ in $(seq 100); do "$BIN" mkfs "nbd://127.0.0.1:$PORT" --disk-paxos "$LOCK_HOSTS" >/dev/null 2>&1 && break; sleep 0.05; done
lock_bench disk_paxos_nbd_tcp "nbd://127.0.0.1:$PORT"
cleanup_server

echo "(I/O size ${MIB} MiB, vmfs block size ${BS} B, nbdkit memory plugin over a Unix socket)"
for key in seq_write_MBps seq_overwrite_MBps seq_read_MBps rand4k_write_iops rand4k_read_iops; do
  o=${OURS[$key]}; p=${PEER[$key]}
  echo "$key: ours=$o peer=$p ratio=$(echo "scale=3; $o / $p" | bc)"
done
