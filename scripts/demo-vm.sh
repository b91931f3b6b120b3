#!/usr/bin/env bash
# One VM and its console on this terminal (the main job before the management server;
# `scripts/demo.sh --vm` runs this).
#
#   hardware KVM  -> the Debian cloud kernel + busybox initramfs, with a shell
#   nested KVM    -> (an unmodified Linux cannot boot there) the `workload` test guest
#                    with a 64 MiB virtio disk, printing a heartbeat
#
# Ctrl-A x or Ctrl-C stops the VM. Builds what it needs: the guest kit
# (scripts/guest-kit.sh) and vinfra-vm in release mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="$ROOT/target/guest-kit"
say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ -e /dev/kvm ]] || die "/dev/kvm does not exist: this host offers no KVM (load kvm_intel or kvm_amd, or use a machine with virtualization)"
[[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not readable and writable by $(id -un): run as root or join the group that owns it"

host=hardware
if [[ -d /sys/module/kvm_pvm ]] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    host=nested
fi

if [[ "$host" == hardware ]]; then
    if [[ ! -f "$KIT/linux/bzImage" || ! -f "$KIT/linux/initramfs.cpio.gz" ]] && [[ -z "${VINFRA_KERNEL:-}" ]]; then
        say "fetching the guest kit (Debian cloud kernel + busybox initramfs)"
        "$ROOT/scripts/guest-kit.sh" >&2
    fi
else
    if [[ ! -f "$KIT/guests/workload.elf" ]]; then
        say "building the test guests"
        "$ROOT/scripts/guest-kit.sh" --guests-only >&2
    fi
fi

say "building vinfra-vm (release)"
(cd "$ROOT" && cargo build --release --quiet -p vinfra-host --bin vinfra-vm) >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/vinfra-vm"
[[ -x "$BIN" ]] || die "$BIN was not built"

if [[ "$host" == hardware ]]; then
    kernel="${VINFRA_KERNEL:-$KIT/linux/bzImage}"
    initrd="${VINFRA_INITRD:-$KIT/linux/initramfs.cpio.gz}"
    say "hardware KVM: booting $(basename "$kernel") with a busybox shell; Ctrl-A x or Ctrl-C stops it"
    exec "$BIN" run --kernel "$kernel" --initrd "$initrd" --memory-mib 512 --vcpus 2 \
        --cmdline "console=ttyS0 vinfra.shell=1 reboot=k panic=-1"
fi

say "this host's /dev/kvm is nested KVM (kvm_pvm or no VMX/SVM): guest kernel code is emulated"
say "instruction by instruction and an unmodified Linux kernel cannot boot here (it stops on"
say "instructions the emulator lacks). Running the 'workload' test guest instead, with a 64 MiB"
say "virtio disk: it prints 'HB <n>' every second and takes commands ('rate 4', 'touch 0 16',"
say "'dwrite 5 42', 'dread 5', 'exit 3'). Ctrl-A x or Ctrl-C stops it."
disk="$(mktemp "${TMPDIR:-/tmp}/vinfra-demo-disk.XXXXXX")"
trap 'rm -f "$disk"' EXIT
truncate -s 64M "$disk"
status=0
"$BIN" run --kernel "$KIT/guests/workload.elf" --memory-mib 256 --disk "$disk" \
    --cmdline "workload.mib=64 workload.rate=1" || status=$?
say "vm ended (exit status $status)"
exit "$status"
