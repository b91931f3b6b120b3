#!/usr/bin/env bash
# Shared helpers of the vmm-core peer scripts (vmm-*.sh): build the guest kit and our VMM,
# run a VMM (ours: target/release/vinfra-vm; peer: QEMU microvm) on a test guest, time it.
# Source it; it sets ROOT, KIT_ENV and the functions below.
#
# Environment:
#   VINFRA_VM=PATH            our VMM binary to use (skips the cargo build)
#   VINFRA_PEERS_NO_BUILD=1   never run cargo; use the binary if it is already there
#   QEMU=PATH                 qemu-system-x86_64 to use
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIT_ENV="$ROOT/target/guest-kit/kit.env"
QEMU="${QEMU:-qemu-system-x86_64}"
OURS=""

log() { printf '%s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Builds the test guests and loads target/guest-kit/kit.env (READY_ELF=... and so on).
peers_kit() {
    "$ROOT/scripts/guest-kit.sh" --guests-only >&2
    # shellcheck disable=SC1090
    source "$KIT_ENV"
}

# Checks what the QEMU side needs.
peers_need_qemu() {
    command -v "$QEMU" >/dev/null 2>&1 || die "$QEMU not found: apt-get install -y qemu-system-x86"
    command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install -y python3"
    [[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable by this user"
}

# Sets OURS to our VMM binary, building it when needed; leaves it empty (and says why) when
# it cannot be had, so the script still measures the peer and prints ours=n/a.
peers_ours() {
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    if [[ -n "${VINFRA_VM:-}" ]]; then
        [[ -x "$VINFRA_VM" ]] || die "VINFRA_VM=$VINFRA_VM is not an executable"
        OURS="$VINFRA_VM"
        return
    fi
    local bin="$target/release/vinfra-vm"
    if [[ "${VINFRA_PEERS_NO_BUILD:-0}" != 1 ]]; then
        log "building our VMM: cargo build --release -p vinfra-host --bin vinfra-vm"
        local out
        if ! out="$(cd "$ROOT" && cargo build --release -p vinfra-host --bin vinfra-vm 2>&1)"; then
            log "$(printf '%s\n' "$out" | tail -n 5)"
            log "ours: vinfra-vm could not be built: measuring the peer only (ours=n/a)"
            return
        fi
    fi
    if [[ -x "$bin" ]]; then
        OURS="$bin"
    else
        log "ours: $bin does not exist: measuring the peer only (ours=n/a)"
    fi
}

# Prints the command line (one word a line) that runs a guest under our VMM.
# usage: ours_cmd KERNEL CMDLINE MEMORY_MIB [DISK...]
ours_cmd() {
    local kernel="$1" cmdline="$2" mem="$3"
    shift 3
    printf '%s\n' "$OURS" run --kernel "$kernel" --cmdline "$cmdline" --memory-mib "$mem" --vcpus 1
    local d
    for d in "$@"; do printf '%s\n' --disk "$d"; done
}

# The same under QEMU microvm. acpi=off: QEMU then names its virtio-mmio devices on the
# kernel command line itself (with ACPI it describes them only in the DSDT), and it is
# closer to our VMM, which has no ACPI either.
# usage: qemu_cmd KERNEL CMDLINE MEMORY_MIB [DISK...]
qemu_cmd() {
    local kernel="$1" cmdline="$2" mem="$3"
    shift 3
    printf '%s\n' "$QEMU" -M microvm,acpi=off -enable-kvm -cpu host,-arch-capabilities -smp 1 \
        -nodefaults -no-user-config -display none -serial stdio -m "$mem" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel "$kernel" -append "$cmdline"
    if (($# > 0)); then
        printf '%s\n' -global virtio-mmio.force-legacy=false
        local i=0 d
        for d in "$@"; do
            printf '%s\n' -drive "id=d$i,file=$d,format=raw,if=none" -device "virtio-blk-device,drive=d$i"
            i=$((i + 1))
        done
    fi
}

# Runs a command once and prints one line:
#   ready_ms=<ms from spawn to the first VINFRA-READY line, or -> exit_ms=<ms to exit>
#   rc=<exit status> hwm_kib=<VmHWM, with --hold> last=<last non-empty output line, or with
#   --match P the last line that starts with P>
# Options before "--": --hold S: S seconds after VINFRA-READY read VmHWM from
# /proc/PID/status, then stop the process (SIGTERM, SIGKILL after 5 s); --timeout S: kill it
# after S seconds (default 60). Its last 5 lines of stderr are shown when it fails.
run_probe() {
    python3 - "$@" <<'PY'
import subprocess, sys, tempfile, threading, time

args = sys.argv[1:]
hold, timeout, match = None, 60.0, ""
while args and args[0] != "--":
    if args[0] == "--match":
        match = args[1]
        args = args[2:]
        continue
    if args[0] == "--hold":
        hold = float(args[1])
    elif args[0] == "--timeout":
        timeout = float(args[1])
    else:
        sys.exit(f"run_probe: unknown option {args[0]}")
    args = args[2:]
cmd = args[1:]


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


err = tempfile.TemporaryFile()
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, bufsize=0)
state = {"ready": None, "last": ""}
ready_evt = threading.Event()


def reader():
    for raw in iter(p.stdout.readline, b""):
        text = raw.decode(errors="replace").rstrip("\r\n")
        if state["ready"] is None and text == "VINFRA-READY":
            state["ready"] = time.monotonic()
            ready_evt.set()
        if text and text.startswith(match):
            state["last"] = text


th = threading.Thread(target=reader, daemon=True)
th.start()
peak, stopped, timed_out = -1, False, False
if hold is not None:
    if ready_evt.wait(timeout):
        time.sleep(hold)
        peak = vm_hwm(p.pid)
        p.terminate()
        stopped = True
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
try:
    rc = p.wait(max(0.0, timeout - (time.monotonic() - t0)))
except subprocess.TimeoutExpired:
    p.kill()
    rc = p.wait()
    timed_out = True
exit_ms = (time.monotonic() - t0) * 1000
th.join(2)
if timed_out:
    print(f"run_probe: killed after {timeout:.0f} s: {' '.join(cmd)}", file=sys.stderr)
if (rc != 0 and not stopped) or timed_out:
    err.seek(0)
    tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
    if tail:
        print("\n".join("  | " + l for l in tail), file=sys.stderr)
ready = f"{(state['ready'] - t0) * 1000:.1f}" if state["ready"] is not None else "-"
print(f"ready_ms={ready} exit_ms={exit_ms:.1f} rc={rc} hwm_kib={peak} last={state['last']}")
PY
}

# Reads field NAME=value out of a run_probe line.
field() { # <line> <name>
    printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1
}

# Median of numbers on stdin ("-"/"n/a" ignored); prints n/a when there are none.
median() {
    python3 -c '
import sys
v = sorted(float(x) for x in sys.stdin.read().split() if x not in ("-", "n/a"))
if not v:
    print("n/a")
else:
    m = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print(f"{m:.{sys.argv[1]}f}")
' "${1:-1}"
}

# Prints "<metric>: ours=<o> peer=<p> ratio=<o/p>".
report() { # <metric> <ours> <peer>
    local ratio=n/a
    if [[ "$2" != n/a && "$3" != n/a ]]; then
        ratio="$(python3 -c 'import sys; o, p = float(sys.argv[1]), float(sys.argv[2]); print(f"{o / p:.3f}" if p else "n/a")' "$2" "$3")"
    fi
    printf '%s: ours=%s peer=%s ratio=%s\n' "$1" "$2" "$3" "$ratio"
}

# What the virtio-net benches (vmm-net.sh, vmm-net-cost.sh) need: root, ip, QEMU, the
# guest kit and our VMM; sets BASE from VINFRA_VM_BASE (another build of ours, optional).
peers_net_setup() {
    [[ "$(id -u)" == 0 ]] || die "needs root (network namespace, TAP)"
    command -v ip >/dev/null 2>&1 || die "ip not found: apt-get install -y iproute2"
    peers_need_qemu
    peers_kit
    peers_ours
    [[ -n "$OURS" ]] || die "our VMM is needed for this comparison"
    BASE="${VINFRA_VM_BASE:-}"
    [[ -z "$BASE" || -x "$BASE" ]] || die "VINFRA_VM_BASE=$BASE is not an executable"
}
