#!/usr/bin/env bash
# The network that follows a VM (issues 13 and 15): on a 3-host `vinfra-lab` (as root:
# port group vm-net on VXLAN between the hosts), a `net` guest ("target", 192.168.77.2)
# runs on host 1 and a pinger guest on host 3 sends it one ICMP echo every 100 ms
# (net.ping), printing each reply with its sequence number. While it pings, the target
# is (1) moved live to host 2 through the API, then (2) its host is killed (kill -9) and
# HA restarts it on another host. The gap is
# the longest silence between two replies (host 3's event times, ms) around each event,
# next to the migration's measured downtime; the pinger sends every 100 ms.
# Last lines: `<metric>: ours=<v>`.
#
# usage: benches/peers/host-net-gap.sh   (as root)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, VXLAN)"
peers_kit
(cd "$ROOT" && cargo build -q --release -p vinfra-host --bins)
BIN="$ROOT/target/release"

python3 - "$BIN" "$NET_ELF" <<'PY'
import hashlib, hmac, json, os, re, subprocess, sys, tempfile, time, urllib.request

bin_dir, kernel = sys.argv[1], sys.argv[2]
lab = os.path.join(tempfile.mkdtemp(prefix="host-net-gap-"), "lab")
subprocess.run([f"{bin_dir}/vinfra-lab", "--dir", lab, "up", "--hosts", "3", "--vms", "0"],
               check=True, capture_output=True)
try:
    rec = json.load(open(os.path.join(lab, "lab.json")))
    apis = [h["api"] for h in rec["hosts"]]
    pids = [h["pid"] for h in rec["hosts"]]
    key = bytes.fromhex(open(os.path.join(lab, "cluster.key")).read().strip())
    prk = hmac.new(b"", key, hashlib.sha256).digest()
    token = hmac.new(prk, b"vinfra host api v1\x01", hashlib.sha256).digest().hex()

    def api(host, method, path, body=None):
        req = urllib.request.Request(apis[host - 1] + "/api/v1" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text else None

    def wait_task(host, tid):
        while True:
            t = api(host, "GET", f"/tasks/{tid}")
            if t["state"] != "running":
                return t
            time.sleep(0.05)

    for h in (1, 2, 3):
        for _ in range(100):
            try:
                api(h, "GET", "/host")
                break
            except Exception:
                time.sleep(0.2)

    count = 400  # 40 s of pings
    api(1, "POST", "/vms", {"name": "target", "kernel": kernel, "memory_mib": 16,
                             "cmdline": "net.ip=192.168.77.2",
                             "nics": [{"portgroup": "vm-net"}], "ha": {"priority": "high"}})
    api(3, "POST", "/vms", {"name": "pinger", "kernel": kernel, "memory_mib": 16,
                             "cmdline": f"net.ip=192.168.77.1 net.ping=192.168.77.2:{count}",
                             "nics": [{"portgroup": "vm-net"}], "ha": {"priority": "disabled"}})
    wait_task(1, api(1, "POST", "/vms/target/start", {})["task"])
    time.sleep(1)
    t_ping = time.time()
    wait_task(3, api(3, "POST", "/vms/pinger/start", {})["task"])
    time.sleep(6)
    t_mig = time.time()
    mig = wait_task(1, api(1, "POST", "/vms/target/migrate", {"to": "2"})["task"])
    if mig["state"] != "success":
        raise SystemExit(f"migration failed: {mig}")
    downtime = mig["result"]["downtime_ms"]
    time.sleep(8)
    t_kill = time.time()
    os.kill(pids[1], 9)  # host 2, which runs the target now
    end = t_ping + count * 0.1 + 15
    done = False
    replies = []
    while time.time() < end and not done:
        time.sleep(1)
        replies, done = [], False
        events, after = [], 0
        while True:
            page = api(3, "GET", f"/events?after={after}")
            if not page:
                break
            events += page
            after = page[-1]["seq"]
        for e in events:
            line = e["data"].get("line", "") if e["event"] == "console" else ""
            if line.startswith("NET-PING-REPLY"):
                replies.append(e["ms"])
            if line.startswith("NET-PING sent="):
                done = True
    if len(replies) < 2:
        raise SystemExit("no ping replies")
    # Host 3's clock (ms since it started) against ours: its first reply came right
    # after the pinger's start, the last when we read it.
    gaps = [(b - a, a) for a, b in zip(replies, replies[1:])]
    first = replies[0]
    at = lambda t: first + (t - t_ping) * 1000  # our wall time on host 3's clock, roughly
    mig_at, kill_at = at(t_mig), at(t_kill)
    mig_gap = max([g for g, a in gaps if mig_at - 2000 <= a <= mig_at + 5000] or [0])
    ha_gap = max([g for g, a in gaps if a >= kill_at - 2000] or [0])
    print(f"{len(replies)} replies; longest silences (ms, at): "
          f"{sorted(gaps, reverse=True)[:4]}; migration at ~{mig_at:.0f}, kill at "
          f"~{kill_at:.0f} (host 3's clock)", file=sys.stderr)
    print(f"migration_downtime_ms: ours={downtime:.1f}")
    print(f"migration_reply_gap_ms: ours={mig_gap}")
    print(f"ha_restart_reply_gap_ms: ours={ha_gap}")
finally:
    subprocess.run([f"{bin_dir}/vinfra-lab", "--dir", lab, "down"], capture_output=True)
PY
