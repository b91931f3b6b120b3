#!/usr/bin/env bash
# vmfs's Disk Paxos lock vs sanlock's resource lease (the Disk Paxos implementation users
# run on shared storage without compare-and-write), the same operation on the same kind
# of storage in one run: an uncontended acquire + release of one lease on an image file.
#   - I/Os per acquire+release: ours counted at the device under the lock protocol
#     (`vmfs bench-lock`); sanlock's counted with strace (every read and write of the
#     image file, io_submit included);
#   - time per acquire+release (median of N): ours in process; sanlock with `sanlock
#     direct acquire|release` (no daemon), each a process, less the median time of a
#     process that does no lease I/O (`sanlock direct dump` of an empty area): an estimate
#     dominated by process start (it can come out negative, printed as 0.001); and, sturdier,
#     a lower bound: the median time sanlock's acquire+release waits in the kernel for its
#     lease I/O (io_getevents and plain reads/writes of the image, timed by strace -T).
# Note: sanlock writes with O_DIRECT and never flushes; ours flushes (fdatasync) at each
# Disk Paxos commit point on an image file, so the times differ in durability as much as
# in protocol; over NBD, see vmfs-nbd.sh.
# Last lines: `<metric>: ours=<v> peer=<v> ratio=<ours/peer>`.
#
# usage: benches/peers/vmfs-sanlock.sh [N (default 50)]   (needs sanlock and strace:
#        apt-get install -y sanlock strace)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50}
command -v sanlock >/dev/null || { echo "sanlock not found: apt-get install -y sanlock" >&2; exit 1; }
command -v strace >/dev/null || { echo "strace not found: apt-get install -y strace" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p vinfra-host --bin vmfs
BIN="$CARGO_TARGET_DIR/release/vmfs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmfs-sanlock.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$BIN" mkfs "$WORK/paxos.img" --size 512M --disk-paxos 8 >/dev/null
OURS=$("$BIN" bench-lock "$WORK/paxos.img" --n "$N")
echo "$OURS" | sed 's/^/ours: /' >&2

python3 - "$WORK/sl.img" "$N" "$OURS" <<'PY'
import statistics, subprocess, sys, time

img, n, ours = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ours = dict(l.split() for l in ours.splitlines() if l.strip())
with open(img, "wb") as f:
    f.truncate(64 << 20)
res = f"LS:R1:{img}:1048576"


def sl(*a):
    subprocess.run(["sanlock", "direct", *a], check=True, capture_output=True)


sl("init", "-s", f"LS:0:{img}:0")
sl("init", "-r", res)


def timed(*a):
    t = time.perf_counter()
    out = subprocess.run(["sanlock", "direct", *a], capture_output=True, text=True)
    dt = (time.perf_counter() - t) * 1000
    if out.returncode != 0 or " 0" not in out.stdout and "done 0" not in out.stdout:
        if a[0] in ("acquire", "release"):
            raise SystemExit(f"sanlock {a}: {out.stdout} {out.stderr}")
    return dt


def ios(*a):
    out = subprocess.run(["strace", "-f", "-y", "-e",
                          "trace=io_submit,pread64,pwrite64,preadv,pwritev,read,write",
                          "sanlock", "direct", *a], capture_output=True, text=True)
    return sum(1 for l in out.stderr.splitlines() if img in l and "= " in l)


def io_wait_ms(*a):
    # The time the process waited in the kernel for its lease I/O (every io_getevents and
    # plain read/write of the image, as strace -T times them): a lower bound on what the
    # acquire or release costs, free of process start and of strace's own overhead.
    out = subprocess.run(["strace", "-f", "-T", "-y", "-e",
                          "trace=io_getevents,pread64,pwrite64,preadv,pwritev,read,write",
                          "sanlock", "direct", *a], capture_output=True, text=True)
    waits = [float(l.rsplit("<", 1)[1].rstrip(">")) * 1000
             for l in out.stderr.splitlines()
             if l.rstrip().endswith(">") and ("io_getevents" in l or img in l)]
    return sum(waits)


cycle = []
base = []
wait = []
for _ in range(n):
    cycle.append(timed("acquire", "-r", res, "-i", "1", "-g", "1")
                 + timed("release", "-r", res, "-i", "1", "-g", "1"))
    # The same process start and file open, without lease I/O: a dump of an empty area.
    base.append(timed("dump", f"{img}:8388608"))
    wait.append(io_wait_ms("acquire", "-r", res, "-i", "1", "-g", "1")
                + io_wait_ms("release", "-r", res, "-i", "1", "-g", "1"))
peer_ios = ios("acquire", "-r", res, "-i", "1", "-g", "1") + ios("release", "-r", res, "-i", "1", "-g", "1")
peer_ms = max(statistics.median(cycle) - 2 * statistics.median(base), 0.001)
our_ios = float(ours["lock_ios_per_acquire_release"])
our_ms = float(ours["lock_median_ms"])
print(f"sanlock: {statistics.median(cycle):.3f} ms per acquire+release process pair, "
      f"{statistics.median(base):.3f} ms per empty process", file=sys.stderr)
print(f"lock_ios_per_acquire_release: ours={our_ios:.1f} peer={peer_ios} ratio={our_ios / peer_ios:.2f}")
print(f"lock_acquire_release_ms: ours={our_ms:.3f} peer={peer_ms:.3f} ratio={our_ms / peer_ms:.2f}")
peer_wait = statistics.median(wait)
print(f"lock_acquire_release_ms_vs_peer_io_wait: ours={our_ms:.3f} peer>={peer_wait:.3f} ratio<={our_ms / peer_wait:.2f}")
PY
