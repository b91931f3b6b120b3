#!/usr/bin/env bash
# virtio-blk throughput, ours (target/release/vinfra-vm) vs QEMU microvm (cache=writeback,
# aio=threads: its defaults), on one raw image file: the `disk` test guest checks the disk,
# then times sequential reads then writes of BENCH_MIB MiB in 64 KiB requests, one request
# in flight (the guest polls; timed with the TSC). RUNS runs each, alternating; the last
# lines are `blk_read_mib_s: ours=<MiB/s> peer=<MiB/s> ratio=<ours/peer>` and
# `blk_write_mib_s: ...` (medians).
#
# usage: benches/peers/vmm-blk.sh   (RUNS=5, BENCH_MIB=256 by default; see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-5}"
BENCH_MIB="${BENCH_MIB:-256}"
SECTORS=64
MEM=256
peers_need_qemu
peers_kit
peers_ours

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
img="$work/disk.img"
# Host pattern in the first sectors, then room for the guest pattern and the bench region.
python3 "$ROOT/vmm-core/guests/tools/mkdisk.py" "$img" "$SECTORS" "$((BENCH_MIB + 2))"
CMDLINE="disk.sectors=$SECTORS disk.bench_mib=$BENCH_MIB"

ours_r=() ours_w=() peer_r=() peer_w=()
one() { # <label> <want rc> <command words...>
    local label="$1" want="$2" r
    shift 2
    r="$(run_probe --timeout 300 --match DISK-BENCH -- "$@")"
    log "run $i $label: $r"
    if [[ "$(field "$r" rc)" != "$want" ]]; then
        log "run $i $label: failed (exit status $(field "$r" rc), want $want)"
        return
    fi
    local rd wr
    rd="$(field "$r" read_mib_s)"
    wr="$(field "$r" write_mib_s)"
    [[ -n "$rd" && -n "$wr" ]] || {
        log "run $i $label: no DISK-BENCH line"
        return
    }
    eval "${label}_r+=(\"$rd\"); ${label}_w+=(\"$wr\")"
}
for ((i = 1; i <= RUNS; i++)); do
    if [[ -n "$OURS" ]]; then
        mapfile -t cmd < <(ours_cmd "$DISK_ELF" "$CMDLINE" "$MEM" "$img")
        one ours 0 "${cmd[@]}"
    fi
    mapfile -t cmd < <(qemu_cmd "$DISK_ELF" "$CMDLINE" "$MEM" "$img")
    one peer 1 "${cmd[@]}"
done

report blk_read_mib_s "$(printf '%s\n' "${ours_r[@]}" | median 2)" "$(printf '%s\n' "${peer_r[@]}" | median 2)"
report blk_write_mib_s "$(printf '%s\n' "${ours_w[@]}" | median 2)" "$(printf '%s\n' "${peer_w[@]}" | median 2)"
