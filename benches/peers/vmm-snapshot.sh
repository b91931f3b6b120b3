#!/usr/bin/env bash
# Snapshot and restore, ours (target/release/vinfra-vm) vs QEMU microvm, on a 256 MiB
# `workload` test guest that really uses its memory (workload.mib=200 workload.rate=0:
# 200 MiB touched once, then idle). RUNS runs each, alternating. Each run:
#
#   save     the guest runs until `HB 2`; then
#            ours: `Ctrl-A s` on stdin with --snapshot-dir and --timings: pause + snapshot
#                  (vm.state + sparse vm.mem, fsynced) as vinfra-vm times them;
#            QEMU: QMP `stop`, then `migrate` to `exec:cat > FILE` (QEMU 7.2 has no `file:`
#                  URI) with max-bandwidth raised from its 128 MiB/s default, timed from
#                  sending `stop` to `query-migrate` saying completed (polled every 1 ms).
#                  Its file is not fsynced, ours is: snapshot_save_durable_ms adds the
#                  time of an fsync of QEMU's file, once `cat` has finished writing it.
#   size     what the save wrote: allocated bytes (st_blocks) and apparent bytes (st_size).
#   restore  a new process on what was saved (ours: --restore DIR; QEMU:
#            -incoming "exec:cat FILE", then QMP `cont` as soon as `query-migrate`, polled
#            every 1 ms, says completed: a VM saved paused comes back paused), timed from
#            spawning it to the guest's first answer on the console: `rate 0` is written
#            to its stdin every 2 ms from the start, and the guest answers only while it
#            runs. The run then checks that the next heartbeat is the one after the last
#            seen before the save (the counter lives in guest memory). Ours also reports
#            vinfra-vm's own restore + resume time (snapshot_lib_restore_ms: Vm::restore
#            and Vm::resume, without exec, dynamic loading and the console round trip).
#
# The snapshot files stay in the page cache between save and restore (warm restore).
# Last lines (medians): `snapshot_save_ms: ours=… peer=… ratio=…`,
# `snapshot_restore_ms: …` and `snapshot_bytes: …` (allocated bytes on disk).
#
# usage: benches/peers/vmm-snapshot.sh   (RUNS=5, WORKLOAD_MIB=200 by default; see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-5}"
MEM=256
CMDLINE="workload.mib=${WORKLOAD_MIB:-200} workload.rate=0"
peers_need_qemu
peers_kit
peers_ours

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One save + restore under one VMM; prints one line of key=value fields:
#   save_ms= save_durable_ms= restore_ms= lib_restore_ms= apparent= allocated= hb_saved=
#   hb_next= hb_ms= (spawn to the first heartbeat after the restore, logged only) ok=0|1
# usage: snap_probe ours|qemu DIR_OR_FILE -- COMMAND...
snap_probe() {
    python3 - "$@" <<'PY'
import json, os, socket, subprocess, sys, tempfile, threading, time

side, target = sys.argv[1], sys.argv[2]
assert sys.argv[3] == "--"
base = sys.argv[4:]
TIMEOUT = 120.0


def fail(why):
    print(f"snap_probe {side}: {why}", file=sys.stderr)
    print("ok=0")
    sys.exit(0)


class Proc:
    """A VMM process whose stdout lines are collected by a thread."""

    def __init__(self, cmd):
        self.err = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, bufsize=0)
        self.lines = []  # (monotonic time, text)
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            text = raw.decode(errors="replace").rstrip("\r\n")
            with self.cv:
                self.lines.append((time.monotonic(), text))
                self.cv.notify_all()
        with self.cv:
            self.lines.append((time.monotonic(), None))  # EOF
            self.cv.notify_all()

    def wait_line(self, pred, start=0, timeout=TIMEOUT):
        """Index of the first line at or after `start` for which pred(text) holds."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    if self.lines[i][1] is None:
                        return None
                    if pred(self.lines[i][1]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def send(self, data):
        try:
            self.p.stdin.write(data)
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def stderr_tail(self, n=5):
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip().splitlines()[-n:]

    def end(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def last_hb(proc):
    with proc.cv:
        hbs = [t for _, t in proc.lines if t and t.startswith("HB ")]
    return int(hbs[-1].split()[1]) if hbs else None


def timings(proc):
    """key=value fields of vinfra-vm's `timings:` lines on stderr."""
    proc.err.seek(0)
    out = {}
    for line in proc.err.read().decode(errors="replace").splitlines():
        if "vinfra-vm: timings:" in line:
            for kv in line.split("timings:", 1)[1].split():
                k, _, v = kv.partition("=")
                out[k] = v.strip("\r")
    return out


def sizes(path):
    files = [path] if os.path.isfile(path) else [
        os.path.join(path, f) for f in os.listdir(path)]
    st = [os.stat(f) for f in files]
    return sum(s.st_size for s in st), sum(s.st_blocks * 512 for s in st)


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.s.makefile("rwb", buffering=0)
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")


# --- save -------------------------------------------------------------------------
qmp_path = os.path.join(tempfile.mkdtemp(), "qmp.sock")
cmd = list(base)
if side == "ours":
    cmd += ["--snapshot-dir", target, "--timings"]
else:
    cmd += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
a = Proc(cmd)
try:
    if a.wait_line(lambda t: t == "HB 2") is None:
        fail("no HB 2 before the save: " + " | ".join(a.stderr_tail()))
    if side == "ours":
        a.send(b"\x01s")
        try:
            rc = a.p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            fail("the snapshot did not finish")
        t = timings(a)
        if rc != 0 or "snapshot_ms" not in t:
            fail(f"exit status {rc}, timings {t}: " + " | ".join(a.stderr_tail()))
        save_ms = float(t["pause_ms"]) + float(t["snapshot_ms"])
    else:
        q = Qmp(qmp_path, time.monotonic() + 10)
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        t0 = time.monotonic()
        q.cmd("stop")
        q.cmd("migrate", uri=f"exec:cat > {target}")
        deadline = t0 + TIMEOUT
        while True:
            st = q.cmd("query-migrate")
            status = st.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                fail(f"migrate ended {status}: {st}")
            time.sleep(0.001)
        save_ms = (time.monotonic() - t0) * 1000
        q.cmd("quit")
        a.p.wait(TIMEOUT)
    # The last heartbeat printed before the guest stopped.
    a.wait_line(lambda t: False, timeout=2)  # drain to EOF
    hb_saved = last_hb(a)
finally:
    a.end()

# QEMU's `cat` child may still be writing the tail of the stream: wait for the size to settle.
prev, deadline = -1, time.monotonic() + 10
while time.monotonic() < deadline:
    cur = sizes(target)[0]
    if cur == prev:
        break
    prev = cur
    time.sleep(0.05)
apparent, allocated = sizes(target)
# Ours fsyncs what it saved; QEMU's `cat` does not. For a like-for-like figure, time an
# fsync of QEMU's file too (save_durable_ms = save_ms + that).
durable_ms = save_ms
if side != "ours":
    t0 = time.monotonic()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    durable_ms = save_ms + (time.monotonic() - t0) * 1000

# --- restore ------------------------------------------------------------------------
cmd = list(base)
if side == "ours":
    cmd += ["--restore", target, "--timings"]
else:
    cmd += ["-incoming", f"exec:cat {target}", "-qmp", f"unix:{qmp_path}.b,server=on,wait=off"]
b = Proc(cmd)
try:
    stop_poke = threading.Event()

    def poke():
        while not stop_poke.is_set() and time.monotonic() - b.t0 < TIMEOUT:
            b.send(b"rate 0\n")
            time.sleep(0.002)

    threading.Thread(target=poke, daemon=True).start()
    if side != "ours":
        # A VM saved paused comes back paused: `cont` once the stream is loaded.
        q = Qmp(f"{qmp_path}.b", b.t0 + TIMEOUT)
        while True:
            status = q.cmd("query-migrate").get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() - b.t0 > TIMEOUT:
                fail(f"incoming migration ended {status}")
            time.sleep(0.001)
        q.cmd("cont")
    i = b.wait_line(lambda t: t.startswith("OK rate") or t.startswith("ERR"))
    stop_poke.set()
    if i is None:
        fail("no answer from the restored guest: " + " | ".join(b.stderr_tail()))
    restore_ms = (b.lines[i][0] - b.t0) * 1000
    j = b.wait_line(lambda t: t.startswith("HB "), timeout=5)
    hb_next = int(b.lines[j][1].split()[1]) if j is not None else None
    # Logged only: when the next heartbeat comes depends on where the guest's 1 s period
    # stood at the save and on whether the VMM carries the guest TSC over the gap.
    hb_ms = f"{(b.lines[j][0] - b.t0) * 1000:.1f}" if j is not None else "-"
    lib = "-"
    if side == "ours":
        t = timings(b)
        if "restore_ms" in t:
            lib = f"{float(t['restore_ms']) + float(t['resume_ms']):.2f}"
finally:
    b.end()

ok = int(hb_saved is not None and hb_next == hb_saved + 1)
if not ok:
    print(f"snap_probe {side}: heartbeat {hb_next} after restore, {hb_saved} before the save",
          file=sys.stderr)
print(f"save_ms={save_ms:.2f} save_durable_ms={durable_ms:.2f} restore_ms={restore_ms:.2f} lib_restore_ms={lib} "
      f"apparent={apparent} allocated={allocated} hb_saved={hb_saved} hb_next={hb_next} "
      f"hb_ms={hb_ms} ok={ok}")
PY
}

ours_save=() ours_durable=() ours_restore=() ours_lib=() ours_alloc=() ours_app=()
peer_save=() peer_durable=() peer_restore=() peer_alloc=() peer_app=()
one() { # <label> <target> <command words...>
    local label="$1" target="$2" r
    shift 2
    rm -rf "$target"
    r="$(snap_probe "$label" "$target" -- "$@")"
    log "run $i $label: $r"
    if [[ "$(field "$r" ok)" != 1 ]]; then
        log "run $i $label: failed"
        return
    fi
    eval "${label}_save+=(\"$(field "$r" save_ms)\")"
    eval "${label}_durable+=(\"$(field "$r" save_durable_ms)\")"
    eval "${label}_restore+=(\"$(field "$r" restore_ms)\")"
    eval "${label}_alloc+=(\"$(field "$r" allocated)\")"
    eval "${label}_app+=(\"$(field "$r" apparent)\")"
    [[ "$label" != ours ]] || ours_lib+=("$(field "$r" lib_restore_ms)")
    rm -rf "$target"
}
for ((i = 1; i <= RUNS; i++)); do
    if [[ -n "$OURS" ]]; then
        mapfile -t cmd < <(ours_cmd "$WORKLOAD_ELF" "$CMDLINE" "$MEM")
        one ours "$work/ours.snap" "${cmd[@]}"
    fi
    mapfile -t cmd < <(qemu_cmd "$WORKLOAD_ELF" "$CMDLINE" "$MEM")
    one peer "$work/qemu.mig" "${cmd[@]}"
done

med() { printf '%s\n' "$@" | median "${DIGITS:-1}"; }
report snapshot_lib_restore_ms "$(med "${ours_lib[@]}")" n/a
report snapshot_apparent_bytes "$(DIGITS=0 med "${ours_app[@]}")" "$(DIGITS=0 med "${peer_app[@]}")"
report snapshot_save_durable_ms "$(med "${ours_durable[@]}")" "$(med "${peer_durable[@]}")"
report snapshot_save_ms "$(med "${ours_save[@]}")" "$(med "${peer_save[@]}")"
report snapshot_restore_ms "$(med "${ours_restore[@]}")" "$(med "${peer_restore[@]}")"
report snapshot_bytes "$(DIGITS=0 med "${ours_alloc[@]}")" "$(DIGITS=0 med "${peer_alloc[@]}")"
