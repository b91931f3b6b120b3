"""What vmm-net.sh and vmm-net-cost.sh share: a network namespace with a TAP that this
process enters, the `net` guest started under our VMM (or a second build of it) or under
QEMU microvm on that TAP with the same guest binary and memory, and the guest's console
read line by line.

Each script imports it with `PYTHONPATH="$(dirname "$0")"`; it runs as root (namespaces,
TAP)."""

import ctypes
import os
import socket
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000


def sh(*a):
    subprocess.run(a, check=True, stdin=subprocess.DEVNULL)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def enter_namespace(ns, tap, host_ip):
    """Makes namespace `ns` with TAP `tap` (`host_ip`/24, up) and moves this process into
    it: from here on it and its children live there. `leave_namespace` removes it."""
    sh("ip", "netns", "add", ns)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        sys.exit("setns failed")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    sh("ip", "addr", "add", f"{host_ip}/24", "dev", tap)
    sh("ip", "link", "set", tap, "up")


def leave_namespace(ns, kinds=()):
    """Removes namespace `ns` (and the TAP in it), and the console logs of `kinds`."""
    subprocess.run(["ip", "netns", "del", ns], stdin=subprocess.DEVNULL)
    for kind in kinds:
        try:
            os.unlink(f"/tmp/{ns}-{kind}.out")
        except OSError:
            pass


class Vmms:
    """Starts the `net` guest `elf` (16 MiB, 1 vCPU) on `tap` with MAC `mac`: `ours` and
    `base` are our VMM's binaries (`vinfra-vm`), any other kind is QEMU microvm with
    virtio-net-device on the same TAP, no vhost."""

    def __init__(self, ours, base, qemu, elf, ns, tap, mac):
        self.ours, self.base, self.qemu, self.elf = ours, base, qemu, elf
        self.ns, self.tap, self.mac = ns, tap, mac

    def start(self, kind, cmdline):
        """The VMM's process and its console log (a file opened for reading)."""
        if kind in ("ours", "base"):
            cmd = [self.ours if kind == "ours" else self.base, "run", "--kernel", self.elf,
                   "--memory-mib", "16", "--vcpus", "1", "--cmdline", cmdline,
                   "--net", f"{self.tap},mac={self.mac}"]
        else:
            cmd = [self.qemu, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                   "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                   "-m", "16", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                   "-global", "virtio-mmio.force-legacy=false",
                   "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                   "-device", f"virtio-net-device,netdev=n0,mac={self.mac}",
                   "-kernel", self.elf, "-append", cmdline]
        logf = open(f"/tmp/{self.ns}-{kind}.out", "w+")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.DEVNULL)
        return p, logf


def blast(guest_ip, size, count, port=9):
    """Sends `count` datagrams of `size` bytes to the guest's sink `port` as fast as the
    TAP takes them (a full queue drops one: the guest's tally says how many arrived);
    returns the socket, for the END that closes the count."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.connect((guest_ip, port))
    payload = b"y" * size
    for _ in range(count):
        try:
            sink.send(payload)
        except OSError:
            pass
    return sink


def wait_line(logf, prefix, timeout, start=0):
    """The first whole console line from byte `start` on that starts with `prefix`, or
    None after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        logf.seek(start)
        # Only whole lines: the VMM may be in the middle of writing one.
        for line in logf.read().split("\n")[:-1]:
            if line.startswith(prefix):
                return line
        time.sleep(0.01)
    return None


def stop(p, logf):
    """Ends a VMM (SIGTERM, SIGKILL after 5 s) and removes its console log."""
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    logf.close()
    os.unlink(logf.name)
