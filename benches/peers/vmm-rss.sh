#!/usr/bin/env bash
# Peak RSS of the VMM process, ours (target/release/vinfra-vm) vs QEMU microvm, running the
# `workload` test guest idle with 256 MiB touched (workload.mib=256 workload.rate=0, VM of
# 512 MiB so the 256 MiB fit above the guest image): VmHWM read 2 s after VINFRA-READY,
# then the VMM is stopped. RUNS runs each, alternating; the last line is
# `rss_mib: ours=<MiB> peer=<MiB> ratio=<ours/peer>` (medians).
#
# usage: benches/peers/vmm-rss.sh        (RUNS=3 by default; see lib.sh for the environment)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-3}"
MEM=512
CMDLINE="workload.mib=256 workload.rate=0"
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
