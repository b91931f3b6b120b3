#!/usr/bin/env bash
# Where a virtio-net frame's time goes, ours vs QEMU microvm (no vhost), with the `net` test
# guest on a TAP in a network namespace this script makes and removes (as vmm-net.sh):
#   - host -> guest: COUNT UDP datagrams of SIZE bytes to the guest's sink port, then END;
#   - guest -> host: the guest sends 4 x COUNT datagrams (net.source); the window is the
#     first 3 x COUNT the host receives, after the VM printed NET-READY.
# Over each window, per datagram (frames counted on the TAP, /proc/net/dev):
#   - each thread of the VMM: CPU time (/proc/PID/task/*/schedstat), so the vCPU thread's
#     share (guest code, emulated on nested KVM, plus what the VMM does on it) stands apart
#     from the VMM's other threads;
#   - with perf: exits to user space (kvm:kvm_userspace_exit), MMIO accesses the kernel saw
#     (kvm:kvm_mmio: with an ioeventfd a notify ends there), and the write/read/poll/futex/
#     ioctl syscalls of the VMM's threads; system-wide kvm:kvm_set_irq (an irqfd signal) and
#     context switches (these count other processes too: read them on a quiet machine).
# perf attaches to the threads that exist when it starts, so it starts after NET-READY.
# The host -> guest window includes the guest polling an empty ring until END arrives
# (up to ~50 ms): the same for every VMM.
#
# usage: benches/peers/vmm-net-cost.sh   (as root; COUNT=5000 SIZE=1400; VINFRA_VM_BASE=PATH
#        adds another build of ours; see lib.sh for VINFRA_VM, QEMU)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT="${COUNT:-5000}"
SIZE="${SIZE:-1400}"
peers_net_setup
command -v perf >/dev/null 2>&1 || log "perf not found (apt-get install -y linux-perf): CPU times only"

PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$(dirname "${BASH_SOURCE[0]}")" python3 - "$OURS" "$QEMU" "$NET_ELF" "$COUNT" "$SIZE" "$BASE" <<'PY'
import os, shutil, signal, socket, subprocess, sys, time

from netbench import Vmms, blast, enter_namespace, leave_namespace, log, stop, wait_line

ours, qemu, elf = sys.argv[1:4]
count, size = int(sys.argv[4]), int(sys.argv[5])
base = sys.argv[6]
ns, tap = f"vncost{os.getpid()}", "vtcost0"
host_ip, guest_ip, mac = "10.97.0.1", "10.97.0.2", "52:54:00:00:00:43"
THREAD_EVENTS = ["kvm:kvm_userspace_exit", "kvm:kvm_mmio"] + [
    f"syscalls:sys_enter_{s}" for s in ("write", "writev", "read", "readv", "poll", "ppoll", "futex", "ioctl")]
SYSTEM_EVENTS = ["kvm:kvm_set_irq", "context-switches"]
PERF = shutil.which("perf")


def thread_cpu_ms(pid):
    """{"tid:name": on-CPU ms} for every thread of pid."""
    r = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                r[f"{t}:{name}"] = int(f.read().split()[0]) / 1e6
        except (OSError, ValueError, IndexError):
            pass
    return r


def tap_packets(direction):
    """Frames the host side of the TAP sent ("tx": towards the VMM) or received ("rx")."""
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith(tap + ":"):
                fields = line.split(":", 1)[1].split()
                return int(fields[1] if direction == "rx" else fields[9])
    raise RuntimeError(f"{tap} not in /proc/net/dev")


class Perf:
    """perf stat on the VMM's threads and system-wide, from start() to stop()."""

    def __init__(self, pid, tag):
        self.procs = []
        if not PERF:
            return
        self.files = [f"/tmp/{ns}-{tag}.threads", f"/tmp/{ns}-{tag}.system"]
        cmds = [["-e", ",".join(THREAD_EVENTS), "--per-thread", "-p", str(pid)],
                ["-e", ",".join(SYSTEM_EVENTS), "-a"]]
        for cmd, out in zip(cmds, self.files):
            self.procs.append(subprocess.Popen(
                [PERF, "stat", "-x", ",", "-o", out] + cmd, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # perf needs a moment before it counts

    def stop(self):
        """{event: count} (thread events summed over the VMM's threads, system ones as all:…)."""
        counts = {}
        for p in self.procs:
            p.send_signal(signal.SIGINT)
            p.wait()
        for i, path in enumerate(getattr(self, "files", [])):
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(",")
                    # --per-thread lines start with the thread; system-wide ones with the count
                    value, event = (parts[1], parts[3]) if i == 0 and len(parts) > 3 else (parts[0], parts[2] if len(parts) > 2 else "")
                    try:
                        n = int(float(value))
                    except ValueError:
                        continue
                    key = event.split(":")[-1] if i == 0 else "all:" + event.split(":")[-1]
                    counts[key] = counts.get(key, 0) + n
            os.unlink(path)
        return counts


def report(kind, direction, frames, counts, cpu0, cpu1, note):
    frames = max(frames, 1)
    print(f"cost: {kind} {direction} {size}B frames={frames} {note}")
    if counts:
        print("  per frame: " + " ".join(f"{k}={v / frames:.2f}" for k, v in sorted(counts.items())))
    total = 0.0
    for t, ms in sorted(cpu1.items()):
        d = ms - cpu0.get(t, 0.0)
        total += d
        if d > 0.05:
            print(f"  thread {t}: {d * 1000 / frames:.1f} us/frame")
    print(f"  process: {total * 1000 / frames:.1f} us/frame", flush=True)


enter_namespace(ns, tap, host_ip)
try:
    vmms = Vmms(ours, base, qemu, elf, ns, tap, mac)

    def host_to_guest(kind):
        p, logf = vmms.start(kind, f"net.ip={guest_ip} net.quiet=1")
        try:
            if not wait_line(logf, "NET-READY", 10):
                log(f"{kind}: no NET-READY")
                return
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            s.connect((guest_ip, 7))
            for _ in range(5):  # ARP, and a warm path
                s.send(b"x" * 64)
                try:
                    s.recv(2048)
                except socket.timeout:
                    pass
            perf = Perf(p.pid, f"{kind}-h2g")
            cpu0, tap0 = thread_cpu_ms(p.pid), tap_packets("tx")
            logf.seek(0, 2)
            mark = logf.tell()
            sink = blast(guest_ip, size, count)
            line = None
            for _ in range(20):  # END may meet a full TAP queue
                time.sleep(0.05)
                sink.send(b"END")
                line = wait_line(logf, "NET-SINK", 0.25, mark)
                if line:
                    break
            cpu1, frames = thread_cpu_ms(p.pid), tap_packets("tx") - tap0
            report(kind, "host->guest", frames, perf.stop(), cpu0, cpu1, f"guest: {line}")
        finally:
            stop(p, logf)

    def guest_to_host(kind):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind((host_ip, 9000))
        rx.settimeout(3.0)
        p, logf = vmms.start(kind, f"net.ip={guest_ip} net.quiet=1 net.source={host_ip}:9000:{4 * count}:{size}")
        try:
            if not wait_line(logf, "NET-READY", 10):
                log(f"{kind}: no NET-READY")
                return
            perf = Perf(p.pid, f"{kind}-g2h")
            cpu0, tap0, t0 = thread_cpu_ms(p.pid), tap_packets("rx"), time.perf_counter()
            got, result = 0, None
            while result is None:
                try:
                    data = rx.recv(2048)
                except socket.timeout:
                    log(f"{kind}: guest -> host stopped after {got} datagrams")
                    perf.stop()
                    return
                if data.startswith(b"END"):
                    break
                got += 1
                if got == 3 * count:
                    cpu1, frames, t1 = thread_cpu_ms(p.pid), tap_packets("rx") - tap0, time.perf_counter()
                    result = (frames, perf.stop(), cpu0, cpu1, f"{frames / (t1 - t0):.0f} frames/s")
            if result:
                report(kind, "guest->host", *result)
        finally:
            stop(p, logf)
            rx.close()

    kinds = ["ours", "qemu"] + (["base"] if base else [])
    for k in kinds:
        host_to_guest(k)
    for k in kinds:
        guest_to_host(k)
finally:
    leave_namespace(ns, ("ours", "qemu", "base"))
PY
