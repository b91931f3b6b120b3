#!/usr/bin/env bash
# Runs every test guest under QEMU microvm and checks what it prints and how it exits
# (see ABI.md): the guests' own test, independent of our VMM. Needs gcc, python3,
# qemu-system-x86 and a usable /dev/kvm; prints "SKIP: <why>" and exits 0 without them.
# Last line: "<n> passed, <n> failed".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
QEMU="${QEMU:-qemu-system-x86_64}"
for tool in gcc python3 "$QEMU"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 0; }
done
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm not usable"; exit 0; }
"$ROOT/scripts/guest-kit.sh" --guests-only >/dev/null
# shellcheck disable=SC1091
source "$ROOT/target/guest-kit/kit.env"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
# qemu <mem-mib> <extra args...> -- runs QEMU with stdin from $work/in (empty by default)
qemu() {
    local mem="$1"
    shift
    timeout 60 "$QEMU" -M microvm,acpi=off -enable-kvm -cpu host,-arch-capabilities -nodefaults \
        -no-user-config -display none -serial stdio -m "$mem" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 "$@"
}
# check <name> <want QEMU status> <output file> <grep -E pattern that every line must match...>
check() {
    local name="$1" want="$2" got="$3" out="$4"
    shift 4
    local ok=1 pat
    [[ "$got" == "$want" ]] || { echo "  $name: QEMU exit status $got, want $want"; ok=0; }
    for pat in "$@"; do
        grep -qE "$pat" "$out" || { echo "  $name: no line matching /$pat/"; ok=0; }
    done
    if ((ok)); then
        echo "ok   $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name"; sed 's/^/  | /' "$out" | tail -n 12
        fail=$((fail + 1))
    fi
}
run() { # <name> <want> <mem> <qemu args...> (stdin: what to type into the serial port)
    local name="$1" want="$2" mem="$3" rc=0
    shift 3
    qemu "$mem" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    echo "$rc" >"$work/$name.rc"
}

# ready: VINFRA-READY, guest exit 0 -> QEMU 1
run ready 1 256 -kernel "$READY_ELF" </dev/null
check ready 1 "$(cat "$work/ready.rc")" "$work/ready.out" '^VINFRA-READY$'

# bad command line -> exit 2 -> QEMU 5
run workload_badarg 5 256 -kernel "$WORKLOAD_ELF" -append "workload.mib=12x" </dev/null
check workload_badarg 5 "$(cat "$work/workload_badarg.rc")" "$work/workload_badarg.out" 'not a number'

# workload: commands over the serial port; exit 7 -> QEMU 15
python3 - "$work" "$QEMU" "$WORKLOAD_ELF" <<'PY'
import subprocess, sys, time
work, qemu, elf = sys.argv[1:4]
cmd = [qemu, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-nodefaults",
       "-no-user-config", "-display", "none", "-serial", "stdio", "-m", "64",
       "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", elf,
       "-append", "workload.mib=32 workload.rate=8"]
out = open(f"{work}/workload.out", "w")
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
deadline = time.monotonic() + 40
def line():
    l = p.stdout.readline().decode(errors="replace").rstrip("\r\n")
    out.write(l + "\n"); out.flush()
    return l
def answer(c):
    p.stdin.write((c + "\n").encode())
    while time.monotonic() < deadline:
        l = line()
        if not l.startswith("HB"):
            return l
while time.monotonic() < deadline and line() != "VINFRA-READY":
    pass
answer("rate 0"); answer("touch 3 5"); answer("touch 8190 5"); answer("nonsense")
while time.monotonic() < deadline and not line().startswith("HB 2"):
    pass
p.stdin.write(b"exit 7\n")
try:
    rc = p.wait(10)
except subprocess.TimeoutExpired:
    p.kill(); rc = p.wait()
open(f"{work}/workload.rc", "w").write(str(rc))
PY
check workload 15 "$(cat "$work/workload.rc")" "$work/workload.out" '^VINFRA-READY$' '^OK rate 0$' \
    '^TOUCHED 0x203000 5$' '^ERR usage: touch' '^ERR unknown command: nonsense$' '^HB 1$' '^HB 2$'

# workload that cannot fit -> exit 2 -> QEMU 5
run workload_toobig 5 64 -kernel "$WORKLOAD_ELF" -append "workload.mib=64" </dev/null
check workload_toobig 5 "$(cat "$work/workload_toobig.rc")" "$work/workload_toobig.out" 'do not fit in RAM'

# disk: host pattern, guest pattern, id, bench
python3 "$ROOT/vmm-core/guests/tools/mkdisk.py" "$work/disk.img" 64 4
# shellcheck disable=SC2054 # commas inside QEMU options
disk=(-global virtio-mmio.force-legacy=false -drive "id=d0,file=$work/disk.img,format=raw,if=none"
    -device virtio-blk-device,drive=d0,serial=vinfra-d0)
run disk 1 256 "${disk[@]}" -kernel "$DISK_ELF" -append "disk.bench_mib=2" </dev/null
check disk 1 "$(cat "$work/disk.rc")" "$work/disk.out" '^DISK-BENCH read_mib_s=[0-9]+\.[0-9]{2} write_mib_s=[0-9]+\.[0-9]{2} ' \
    '^DISK-OK sectors=64 id=vinfra-d0$'
# a zeroed disk: the host pattern check must fail -> exit 1 -> QEMU 3
truncate -s 1M "$work/zero.img"
run disk_zero 3 256 -global virtio-mmio.force-legacy=false -drive "id=d0,file=$work/zero.img,format=raw,if=none" \
    -device virtio-blk-device,drive=d0 -kernel "$DISK_ELF" </dev/null
check disk_zero 3 "$(cat "$work/disk_zero.rc")" "$work/disk_zero.out" '^DISK-FAIL host pattern mismatch at sector 0 word 0'
# no device -> exit 3 -> QEMU 7
run disk_nodev 7 256 -kernel "$DISK_ELF" </dev/null
check disk_nodev 7 "$(cat "$work/disk_nodev.rc")" "$work/disk_nodev.out" '^DISK-FAIL no virtio_mmio.device'

# evil: every case reported, the device works after a reset
run evil 1 256 "${disk[@]}" -kernel "$EVIL_ELF" </dev/null
check evil 1 "$(cat "$work/evil.rc")" "$work/evil.out" '^EVIL mmio_hole status=ok' '^EVIL desc_outside_ram status=' \
    '^EVIL desc_straddles_ram_end status=' '^EVIL desc_loop status=' '^EVIL desc_index_oob status=' \
    '^EVIL short_header status=' '^EVIL read_past_end status=' '^EVIL recovery status=0$' '^EVIL-DONE$'

echo "$pass passed, $fail failed"
((fail == 0))
