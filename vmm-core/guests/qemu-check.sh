#!/usr/bin/env bash
# Runs every test guest and checks what it prints and how it exits (see ABI.md): the
# guests' own test. By default under QEMU microvm; with --ours under our VMM
# (VINFRA_VM=PATH, default target/release/vinfra-vm; nothing is built here).
# Needs gcc, python3, qemu-system-x86 (or our binary) and a usable /dev/kvm; prints
# "SKIP: <why>" and exits 0 without them. Last line: "<n> passed, <n> failed".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../benches/peers/lib.sh
source "$ROOT/benches/peers/lib.sh"

side=qemu
[[ "${1:-}" == --ours ]] && side=ours
for tool in gcc python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 0; }
done
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm not usable"; exit 0; }
if [[ "$side" == qemu ]]; then
    command -v "$QEMU" >/dev/null 2>&1 || { echo "SKIP: $QEMU not found"; exit 0; }
else
    OURS="${VINFRA_VM:-${CARGO_TARGET_DIR:-$ROOT/target}/release/vinfra-vm}"
    [[ -x "$OURS" ]] || { echo "SKIP: $OURS not built"; exit 0; }
fi
"$ROOT/scripts/guest-kit.sh" --guests-only >/dev/null
# shellcheck disable=SC1091
source "$ROOT/target/guest-kit/kit.env"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pass=0 fail=0

# cmd KERNEL CMDLINE MEM [DISK...]: the VMM's command, one word a line.
cmd() { if [[ "$side" == qemu ]]; then qemu_cmd "$@"; else ours_cmd "$@"; fi; }
# The guest's exit code from the VMM's exit status (QEMU: (code << 1) | 1).
guest_code() {
    if [[ "$side" == ours ]]; then
        echo "$1"
    elif (($1 % 2 == 1)); then
        echo $((($1 - 1) / 2))
    else
        echo "qemu-status-$1"
    fi
}
# run NAME KERNEL CMDLINE MEM [DISK...]: output in $work/NAME.out, guest code in NAME.code
run() {
    local name="$1" rc=0
    shift
    mapfile -t c < <(cmd "$@")
    timeout 60 "${c[@]}" </dev/null >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    guest_code "$rc" >"$work/$name.code"
}
# check NAME WANT_CODE PATTERN...: every grep -E pattern must match some output line
check() {
    local name="$1" want="$2" got ok=1 pat
    shift 2
    got="$(cat "$work/$name.code")"
    [[ "$got" == "$want" ]] || { echo "  $name: guest exit code $got, want $want"; ok=0; }
    for pat in "$@"; do
        grep -qE "$pat" "$work/$name.out" || { echo "  $name: no line matching /$pat/"; ok=0; }
    done
    if ((ok)); then
        echo "ok   $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name"
        sed 's/^/  | /' "$work/$name.out" | tail -n 12
        sed 's/^/  ! /' "$work/$name.err" | tail -n 5
        fail=$((fail + 1))
    fi
}

run ready "$READY_ELF" "" 256
check ready 0 '^VINFRA-READY$'

run workload_badarg "$WORKLOAD_ELF" "workload.mib=12x" 256
check workload_badarg 2 'not a number'

run workload_toobig "$WORKLOAD_ELF" "workload.mib=64" 64
check workload_toobig 2 'do not fit in RAM'

# session NAME "CMD;CMD…" KERNEL CMDLINE MEM [DISK...]: sends each command after
# VINFRA-READY and waits for its answer (the next line that is not a heartbeat), waits for
# `HB 2`, then sends `exit 7`. Output in $work/NAME.out, guest code in NAME.code.
session() {
    local name="$1" cmds="$2" rc=0
    shift 2
    mapfile -t c < <(cmd "$@")
    python3 - "$work/$name.out" "$cmds" "${c[@]}" <<'PY' || rc=$?
import subprocess, sys, time
out = open(sys.argv[1], "w")
p = subprocess.Popen(sys.argv[3:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 40
def line():
    l = p.stdout.readline().decode(errors="replace").rstrip("\r\n")
    out.write(l + "\n"); out.flush()
    return l
def answer(c):
    p.stdin.write((c + "\n").encode()); p.stdin.flush()
    while time.monotonic() < deadline:
        if not line().startswith("HB"):
            return
while time.monotonic() < deadline and line() != "VINFRA-READY":
    pass
for c in sys.argv[2].split(";"):
    answer(c)
while time.monotonic() < deadline and not line().startswith("HB 2"):
    pass
p.stdin.write(b"exit 7\n"); p.stdin.flush()
try:
    sys.exit(p.wait(10))
except subprocess.TimeoutExpired:
    p.kill(); sys.exit(p.wait())
PY
    guest_code "$rc" >"$work/$name.code"
    : >"$work/$name.err"
}

# workload: commands over the serial port, then `exit 7`
session workload "rate 0;touch 3 5;touch 8190 5;ping 42;nonsense;dread 1" \
    "$WORKLOAD_ELF" "workload.mib=32 workload.rate=8" 64
check workload 7 '^VINFRA-READY$' '^OK rate 0$' '^TOUCHED 0x203000 5$' '^ERR usage: touch' \
    '^PONG 42$' '^ERR unknown command: nonsense$' '^ERR no disk$' '^HB 1$' '^HB 2$'

# workload with a zeroed disk: dwrite/dread, then the host reads sector 5 of the image
truncate -s 1M "$work/wdisk.img"
session workload_disk "dwrite 5 305419896;dread 5;dread 6;dread 2048;ping 43" \
    "$WORKLOAD_ELF" "workload.mib=4 workload.rate=8" 64 "$work/wdisk.img"
python3 - "$work/wdisk.img" >>"$work/workload_disk.out" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(5 * 512)
    w = set(struct.unpack("<128I", f.read(512)))
print("HOST-SECTOR 5", w.pop() if len(w) == 1 else "mixed")
PY
check workload_disk 7 '^VINFRA-READY$' '^DWROTE 5 305419896$' '^DREAD 5 305419896$' '^DREAD 6 0$' \
    '^ERR usage: dread <sector> within 2048 sectors$' '^PONG 43$' '^HB 2$' '^HOST-SECTOR 5 305419896$'

python3 "$ROOT/vmm-core/guests/tools/mkdisk.py" "$work/disk.img" 64 4
run disk "$DISK_ELF" "disk.bench_mib=2" 256 "$work/disk.img"
check disk 0 '^DISK-BENCH read_mib_s=[0-9]+\.[0-9]{2} write_mib_s=[0-9]+\.[0-9]{2}( |$)' '^DISK-OK sectors=64 id='

truncate -s 1M "$work/zero.img"
run disk_zero "$DISK_ELF" "" 256 "$work/zero.img"
check disk_zero 1 '^DISK-FAIL host pattern mismatch at sector 0 word 0'

run disk_nodev "$DISK_ELF" "" 256
check disk_nodev 3 '^DISK-FAIL no virtio_mmio.device'

run evil "$EVIL_ELF" "" 256 "$work/disk.img"
check evil 0 '^EVIL mmio_hole status=ok' '^EVIL desc_outside_ram status=' '^EVIL desc_straddles_ram_end status=' \
    '^EVIL desc_loop status=' '^EVIL desc_index_oob status=' '^EVIL short_header status=' \
    '^EVIL read_past_end status=' '^EVIL recovery status=0$' '^EVIL-DONE$'

echo "$pass passed, $fail failed"
((fail == 0))
