#!/usr/bin/env bash
# virtio-net, ours (target/release/vinfra-vm) vs QEMU microvm (-netdev tap, user-space
# virtio-net: no vhost here), with the same `net` test guest, on the same persistent TAP in
# a network namespace this script makes and removes. RUNS runs each, alternating. Measured
# from the namespace (the host side of the TAP):
#   - UDP echo round trip: ECHOES sequential 64-byte requests to the guest's echo port;
#     median and p99 in microseconds;
#   - host -> guest: a burst of COUNT UDP datagrams of 64 and of 1400 bytes to the guest's
#     sink port, then END; the guest counts what arrived and times it (first datagram to
#     END, TSC): packets/s and MB/s received;
#   - guest -> host: the guest sends COUNT datagrams (net.source) as fast as its queue
#     allows; the host counts what arrived and times it (first to last): packets/s, MB/s;
#     and the VMM process's CPU time over the same span (all its threads, from
#     /proc/PID/task/*/schedstat) per datagram: what one frame costs the VMM, guest code
#     included, whatever the machine's load (packets/s on a shared machine is mostly
#     how much CPU the vCPU thread got).
# Last lines: `<metric>: ours=<v> peer=<v> ratio=<ours/peer>` (medians over the runs).
# With VINFRA_VM_BASE=PATH (another build of our VMM, e.g. the tree before a change) it runs
# third in the same alternation, and `<metric>: base=<v> ours=<v> ratio=<ours/base>` lines
# follow: a before/after under the same machine load.
#
# usage: benches/peers/vmm-net.sh   (as root; RUNS=3 ECHOES=1000 COUNT=5000; see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-3}"
ECHOES="${ECHOES:-1000}"
COUNT="${COUNT:-5000}"
peers_net_setup

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$(dirname "${BASH_SOURCE[0]}")" python3 - "$OURS" "$QEMU" "$NET_ELF" "$RUNS" "$ECHOES" "$COUNT" "$BASE" >"$out" <<'PY'
import os, socket, statistics, sys, time

from netbench import Vmms, blast, enter_namespace, leave_namespace, log, stop, wait_line

ours, qemu, elf, runs, echoes, count = sys.argv[1:4] + [int(x) for x in sys.argv[4:7]]
base = sys.argv[7]
ns, tap = f"vnbench{os.getpid()}", "vtbench0"
host_ip, guest_ip, mac = "10.96.0.1", "10.96.0.2", "52:54:00:00:00:42"


enter_namespace(ns, tap, host_ip)
try:
    vmms = Vmms(ours, base, qemu, elf, ns, tap, mac)

    def cpu_ms(pid):
        """On-CPU time of all threads of `pid` so far, in ms."""
        total = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1e6

    def fields(line):
        return {k: float(v) for k, v in (w.split("=") for w in line.split()[1:])}

    def one(kind):
        r = {}
        p, logf = vmms.start(kind, f"net.ip={guest_ip} net.quiet=1")
        try:
            if not wait_line(logf, "NET-READY", 10):
                log(f"{kind}: no NET-READY")
                return r
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.5)
            s.connect((guest_ip, 7))
            rtts = []
            for i in range(echoes + 50):
                t0 = time.perf_counter_ns()
                s.send(b"x" * 64)
                try:
                    s.recv(2048)
                except socket.timeout:
                    continue
                if i >= 50:
                    rtts.append((time.perf_counter_ns() - t0) / 1000)
            if rtts:
                rtts.sort()
                r["udp_rtt_median_us"] = statistics.median(rtts)
                r["udp_rtt_p99_us"] = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
            for size in (64, 1400):
                logf.seek(0, 2)
                mark = logf.tell()
                sink = blast(guest_ip, size, count)
                # END may meet a full TAP queue: repeat it until the guest reports.
                line = None
                for _ in range(20):
                    time.sleep(0.05)
                    sink.send(b"END")
                    line = wait_line(logf, "NET-SINK", 0.25, mark)
                    if line:
                        break
                if line:
                    f = fields(line)
                    if f["us"] > 0:
                        r[f"h2g_{size}_pps"] = f["packets"] / f["us"] * 1e6
                        r[f"h2g_{size}_mb_s"] = f["bytes"] / f["us"]
                    log(f"{kind} h2g {size}: {line}")
        finally:
            stop(p, logf)
        for size in (64, 1400):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind((host_ip, 9000))
            rx.settimeout(2.0)
            p, logf = vmms.start(kind, f"net.ip={guest_ip} net.quiet=1 net.source={host_ip}:9000:{count}:{size}")
            got, nbytes, first, last = 0, 0, None, None
            cpu_first = cpu_last = None
            try:
                while True:
                    try:
                        data = rx.recv(2048)
                    except socket.timeout:
                        break
                    now = time.perf_counter()
                    if data.startswith(b"END"):
                        cpu_last = cpu_ms(p.pid)
                        break
                    if first is None:
                        cpu_first = cpu_ms(p.pid)
                    first = first or now
                    last = now
                    got += 1
                    nbytes += len(data)
                line = wait_line(logf, "NET-SOURCE", 2)
                log(f"{kind} g2h {size}: received {got} of {count}; guest: {line}")
                if got > 1 and last > first:
                    r[f"g2h_{size}_pps"] = got / (last - first)
                    r[f"g2h_{size}_mb_s"] = nbytes / (last - first) / 1e6
                if got > 1 and cpu_first is not None and cpu_last is not None:
                    r[f"g2h_{size}_vmm_cpu_us_per_pkt"] = (cpu_last - cpu_first) * 1000 / (got - 1)
            finally:
                stop(p, logf)
                rx.close()
        return r

    kinds = ("ours", "peer", "base") if base else ("ours", "peer")
    results = {k: [] for k in kinds}
    for i in range(runs):
        for kind in kinds:
            r = one(kind)
            log(f"run {i + 1} {kind}: " + " ".join(f"{k}={v:.1f}" for k, v in r.items()))
            results[kind].append(r)
    metrics = ["udp_rtt_median_us", "udp_rtt_p99_us"] + [
        f"{d}_{s}_{u}" for d in ("h2g", "g2h") for s in (64, 1400) for u in ("pps", "mb_s")] + [
        f"g2h_{s}_vmm_cpu_us_per_pkt" for s in (64, 1400)]
    for m in metrics:
        vals = {k: [r[m] for r in results[k] if m in r] for k in results}
        med = {k: (statistics.median(v) if v else None) for k, v in vals.items()}
        print(m, *(med[k] if med[k] is not None else "n/a" for k in ("ours", "peer")),
              (med["base"] if med["base"] is not None else "n/a") if base else "-")
finally:
    leave_namespace(ns, ("ours", "peer", "base"))
PY
fmt() { [[ "$1" == n/a ]] && echo n/a || printf '%.2f' "$1"; }
while read -r metric o p _; do
    report "$metric" "$(fmt "$o")" "$(fmt "$p")"
done <"$out"
if [[ -n "$BASE" ]]; then
    while read -r metric o _ b; do
        ratio=n/a
        if [[ "$o" != n/a && "$b" != n/a ]]; then
            ratio="$(python3 -c 'import sys; o, b = float(sys.argv[1]), float(sys.argv[2]); print(f"{o / b:.3f}" if b else "n/a")' "$o" "$b")"
        fi
        printf '%s: base=%s ours=%s ratio=%s\n' "$metric" "$(fmt "$b")" "$(fmt "$o")" "$ratio"
    done <"$out"
fi
