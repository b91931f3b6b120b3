#!/usr/bin/env bash
# Boot time, ours (target/release/vinfra-vm) vs QEMU microvm, on the `ready` test guest:
# process start to the VINFRA-READY line and to process exit, RUNS runs each, alternating.
# Last lines: `ready: ours=<ms> peer=<ms> ratio=<ours/peer>` and `boot: ...` (medians, ms).
#
# usage: benches/peers/vmm-boot.sh        (RUNS=10 by default; see lib.sh for the environment)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-10}"
MEM=256
peers_need_qemu
peers_kit
peers_ours

ours_ready=() ours_exit=() peer_ready=() peer_exit=()
for ((i = 1; i <= RUNS; i++)); do
    if [[ -n "$OURS" ]]; then
        mapfile -t cmd < <(ours_cmd "$READY_ELF" "" "$MEM")
        r="$(run_probe --timeout 30 -- "${cmd[@]}")"
        log "run $i ours: $r"
        if [[ "$(field "$r" rc)" == 0 && "$(field "$r" ready_ms)" != - ]]; then
            ours_ready+=("$(field "$r" ready_ms)")
            ours_exit+=("$(field "$r" exit_ms)")
        else
            log "run $i ours: failed (want VINFRA-READY and exit status 0)"
        fi
    fi
    mapfile -t cmd < <(qemu_cmd "$READY_ELF" "" "$MEM")
    r="$(run_probe --timeout 30 -- "${cmd[@]}")"
    log "run $i peer: $r"
    # isa-debug-exit: guest code V exits QEMU with (V << 1) | 1, so 1 is success.
    if [[ "$(field "$r" rc)" == 1 && "$(field "$r" ready_ms)" != - ]]; then
        peer_ready+=("$(field "$r" ready_ms)")
        peer_exit+=("$(field "$r" exit_ms)")
    else
        log "run $i peer: failed (want VINFRA-READY and QEMU status 1)"
    fi
done

report ready "$(printf '%s\n' "${ours_ready[@]}" | median 1)" "$(printf '%s\n' "${peer_ready[@]}" | median 1)"
report boot "$(printf '%s\n' "${ours_exit[@]}" | median 1)" "$(printf '%s\n' "${peer_exit[@]}" | median 1)"
