#!/usr/bin/env bash
# The main job: a small datacentre on this machine, run from a browser.
#
#   1. builds what it needs: the test guests (and, on hardware KVM, the Linux guest kit),
#      the release binaries (vinfra-host, vinfra-lab, vinfra-vm, vinfra, vinfra-center)
#      and the web console (npm ci && npm run build);
#   2. starts a lab of 3 hosts sharing one vmfs volume (each host in its own network
#      namespace when run as root, loopback ports otherwise);
#   3. starts the management server vinfra-center over HTTPS (self-signed certificate)
#      with its web console;
#   4. creates 6 test-guest VMs (and 2 Linux VMs on hardware KVM) and starts them with
#      no host named, so DRS places them;
#   5. prints the console's URL and the login, and runs until Ctrl-C, then stops the
#      server and the lab and removes what it made.
#
#   scripts/demo.sh --vm     one VM and its console on this terminal instead
#
# Environment: VINFRA_DEMO_LISTEN (default 127.0.0.1:8443), VINFRA_DEMO_HOSTS (3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == "--vm" ]]; then
    exec "$ROOT/scripts/demo-vm.sh"
fi
[[ $# -eq 0 ]] || { printf 'usage: scripts/demo.sh [--vm]\n' >&2; exit 2; }

KIT="$ROOT/target/guest-kit"
LISTEN="${VINFRA_DEMO_LISTEN:-127.0.0.1:8443}"
HOSTS="${VINFRA_DEMO_HOSTS:-3}"
say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ -e /dev/kvm ]] || die "/dev/kvm does not exist: this host offers no KVM (load kvm_intel or kvm_amd, or use a machine with virtualization)"
[[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not readable and writable by $(id -un): run as root or join the group that owns it"
command -v npm >/dev/null || die "npm is needed to build the web console (Node.js 18 or later)"
command -v curl >/dev/null || die "curl is needed to create the demo's VMs"
command -v python3 >/dev/null || die "python3 is needed to read the server's answers"

hardware=no
if [[ ! -d /sys/module/kvm_pvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
    hardware=yes
fi
if [[ ! -f "$KIT/guests/workload.elf" ]]; then
    say "building the test guests"
    "$ROOT/scripts/guest-kit.sh" --guests-only >&2
fi
if [[ "$hardware" == yes && ! -f "$KIT/linux/bzImage" ]]; then
    say "fetching the Linux guest kit (Debian cloud kernel + busybox initramfs)"
    "$ROOT/scripts/guest-kit.sh" >&2
fi

say "building the hosts and the management server (release; the first time takes a while)"
(cd "$ROOT" && cargo build --release --quiet -p vinfra-host --bin vinfra-host --bin vinfra-lab \
    --bin vinfra-vm --bin vinfra -p vinfra-center --bin vinfra-center) >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
say "building the web console (npm ci && npm run build)"
(cd "$ROOT/examples/center/web" && npm ci --no-audit --no-fund --silent && npm run --silent build) >&2

STATE="$(mktemp -d "${TMPDIR:-/tmp}/vinfra-demo.XXXXXX")"
CENTER_PID=""
cleanup() {
    trap - EXIT INT TERM
    say "stopping the management server and the lab"
    if [[ -n "$CENTER_PID" ]] && kill -0 "$CENTER_PID" 2>/dev/null; then
        kill -TERM "$CENTER_PID" 2>/dev/null || true
        wait "$CENTER_PID" 2>/dev/null || true
    fi
    if [[ -f "$STATE/lab/lab.json" ]]; then
        "$BIN/vinfra-lab" --dir "$STATE/lab" down >&2 || true
    fi
    rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a lab of $HOSTS hosts on one shared vmfs volume"
"$BIN/vinfra-lab" --dir "$STATE/lab" up --hosts "$HOSTS" --vms 0 >&2

password="$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | head -c 16)"
printf '%s\n' "$password" > "$STATE/admin-password"
chmod 600 "$STATE/admin-password"
say "starting vinfra-center on https://$LISTEN"
# Its own session: a Ctrl-C on the terminal reaches this script, which stops it in order.
setsid "$BIN/vinfra-center" --state-dir "$STATE/center" --listen "$LISTEN" --lab "$STATE/lab" \
    --admin-password-file "$STATE/admin-password" --web-dir "$ROOT/examples/center/web/dist" \
    > "$STATE/center.out" 2> "$STATE/center.log" &
CENTER_PID=$!
CA="$STATE/center/tls/cert.pem"
URL="https://$LISTEN"
api() { # METHOD PATH [BODY]: the answer's body; fails on an HTTP error
    curl -sS --fail-with-body --cacert "$CA" -X "$1" -H "vinfra-api-session-id: ${TOKEN:-}" \
        -H 'content-type: application/json' ${3:+--data "$3"} "$URL$2"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

for _ in $(seq 100); do
    [[ -f "$CA" ]] && curl -s --cacert "$CA" -o /dev/null "$URL/api/openapi.json" && break
    kill -0 "$CENTER_PID" 2>/dev/null || { cat "$STATE/center.log" >&2; die "vinfra-center did not start"; }
    sleep 0.2
done
TOKEN="$(curl -sS --fail-with-body --cacert "$CA" -X POST -u "admin:$password" "$URL/api/session" | json 'd["token"]')"
for _ in $(seq 150); do
    connected="$(api GET /api/vcenter/host | json 'sum(h["state"] == "connected" for h in d)')"
    [[ "$connected" == "$HOSTS" ]] && break
    sleep 0.2
done
[[ "$connected" == "$HOSTS" ]] || die "only $connected of $HOSTS hosts answer the server"

# Make the cluster fully automated so that DRS also rebalances on its own.
api PATCH /api/vcenter/cluster/cluster-1 '{"drs": {"automation": "fully_automated", "threshold": 3}}' >/dev/null
vms=(web-1 web-2 app-1 app-2 db-1 db-2)
say "creating ${#vms[@]} VMs (the workload test guest, 32 MiB) and starting them where DRS places them"
for vm in "${vms[@]}"; do
    api POST /api/vcenter/vm "{\"spec\": {\"name\": \"$vm\", \"kernel\": \"$KIT/guests/workload.elf\", \"memory_mib\": 32, \"cmdline\": \"workload.mib=8 workload.rate=1\"}}" >/dev/null
    api POST "/api/vcenter/vm/$vm/power?action=start" >/dev/null
    sleep 0.3 # each placement sees the VMs started before it
done
if [[ "$hardware" == yes ]]; then
    say "hardware KVM: creating 2 Linux VMs (Debian kernel + busybox shell, 256 MiB)"
    for vm in linux-1 linux-2; do
        api POST /api/vcenter/vm "{\"spec\": {\"name\": \"$vm\", \"kernel\": \"$KIT/linux/bzImage\", \"initrd\": \"$KIT/linux/initramfs.cpio.gz\", \"memory_mib\": 256, \"cmdline\": \"console=ttyS0 vinfra.shell=1 reboot=k panic=-1\"}}" >/dev/null
        api POST "/api/vcenter/vm/$vm/power?action=start" >/dev/null
    done
fi

cat <<EOF

  vinfra datacentre is up: $HOSTS hosts, ${#vms[@]} VMs placed by DRS.

  Web console:  $URL   (self-signed certificate: accept it in the browser,
                or trust $CA)
  Log in as:    admin / $password

  Things to try: open a VM and watch its console; migrate it to another host;
  put a host into maintenance mode; run DRS from the cluster page, add a rule or
  a resource pool there; kill a host (kill -9 a vinfra-host process:
  \`$BIN/vinfra-lab --dir $STATE/lab status\`) and watch HA restart its VMs; raise
  the host failures HA must tolerate (Edit settings) and see a power-on refused;
  snapshot a VM; make a backup job on the datacenter page, then browse a backup's
  files or restore it as a new VM. From a shell:
  $BIN/vinfra login --server https://$LISTEN --ca-cert $STATE/center/tls/cert.pem

  Ctrl-C stops everything.
EOF
while kill -0 "$CENTER_PID" 2>/dev/null; do
    sleep 1
done
say "vinfra-center ended on its own; its log:"
tail -n 20 "$STATE/center.log" >&2
exit 1
