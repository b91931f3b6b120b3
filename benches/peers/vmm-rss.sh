#!/usr/bin/env bash
# Peak RSS of the VMM process, ours (target/release/vinfra-vm) vs QEMU microvm (-m 256),
# with an idle 256 MiB `workload` test guest: VM memory 256 MiB, the guest keeping only a
# small buffer (workload.mib=16 workload.rate=0; the VM needs N + 3 MiB, see
# vmm-core/guests/ABI.md), so the figure is the VMM's own overhead plus the few guest
# pages touched, not guest RAM the guest filled. VmHWM is read 2 s after VINFRA-READY,
# then the VMM is stopped. RUNS runs each, alternating; the last line is
# `rss_mib: ours=<MiB> peer=<MiB> ratio=<ours/peer>` (medians).
#
# usage: benches/peers/vmm-rss.sh   (RUNS=5, WORKLOAD_MIB=16 by default; see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-5}"
MEM=256
CMDLINE="workload.mib=${WORKLOAD_MIB:-16} workload.rate=0"
HOLD_S=2
peers_need_qemu
peers_kit
peers_ours

ours=() peer=()
one() { # <label> <command words...>: appends the MiB to the array named by label
    local label="$1" r hwm
    shift
    r="$(run_probe --hold "$HOLD_S" --timeout 60 -- "$@")"
    log "run $i $label: $r"
    hwm="$(field "$r" hwm_kib)"
    if [[ "$(field "$r" ready_ms)" == - || "$hwm" -le 0 ]]; then
        log "run $i $label: failed (no VINFRA-READY or no VmHWM)"
        return
    fi
    eval "$label+=(\"\$(python3 -c 'import sys; print(f\"{int(sys.argv[1]) / 1024:.1f}\")' \"\$hwm\")\")"
}
for ((i = 1; i <= RUNS; i++)); do
    if [[ -n "$OURS" ]]; then
        mapfile -t cmd < <(ours_cmd "$WORKLOAD_ELF" "$CMDLINE" "$MEM")
        one ours "${cmd[@]}"
    fi
    mapfile -t cmd < <(qemu_cmd "$WORKLOAD_ELF" "$CMDLINE" "$MEM")
    one peer "${cmd[@]}"
done

report rss_mib "$(printf '%s\n' "${ours[@]}" | median 1)" "$(printf '%s\n' "${peer[@]}" | median 1)"
