#!/usr/bin/env bash
# vcb side by side with restic and borgbackup on the same disk image, in one run.
#
# Dataset: a sparse ext4 image (default 2 GiB) built with `mke2fs -d` from real files of
# this machine (parts of /usr, default ~1.3 GiB); then about 5 % of its blocks changed
# through a loop mount (files overwritten in the middle, appended to, deleted, created).
# Ours (vcb/examples/peer_bench.rs) writes the first image into a vmfs virtual disk and
# backs up the frozen snapshot read from a second mount (full); then it writes the 4 KiB
# blocks that differ in the second image into the virtual disk, so changed-block tracking
# records them, and backs up again (incremental). restic (defaults) and borg (lz4,
# repokey encryption, as ours and restic encrypt) back up the same image file twice,
# before and after the change. Then each restores the whole image and verifies every
# byte of its repository (ours: verify ReadData, and ReadPacks — every pack's keyed hash;
# restic check --read-data; borg check --verify-data). Single files: ours restores them straight out of image backups (ext4
# from the incremental; FAT32 and NTFS images built here); the peers have no such thing,
# so their figure is what a whole-image restore costs (before any mount).
#
# The peers' runs and ours alternate: ours, restic, borg, for --rounds rounds; the best
# of each figure is kept. Last lines: `<metric>: ours=… peer=… ratio=…`.
#
# usage: benches/peers/vcb-restic-borg.sh [--rounds N] [--image-mib N] [--data-mib N]
# Needs root (loop mount), e2fsprogs, dosfstools, mtools, ntfs-3g, restic, borgbackup:
#   apt-get install -y e2fsprogs dosfstools mtools ntfs-3g restic borgbackup
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=1
IMAGE_MIB=2048
DATA_MIB=1300
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --image-mib) IMAGE_MIB="$2"; shift ;;
        --data-mib) DATA_MIB="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for t in mke2fs mkfs.fat mcopy mkntfs ntfscp restic borg; do
    command -v "$t" >/dev/null || { echo "error: $t not installed (see the header)" >&2; exit 1; }
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p vinfra-vcb --example peer_bench
OURS="$CARGO_TARGET_DIR/release/examples/peer_bench"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/vcb-peers.XXXXXX")
MNT="$WORK/mnt"
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
bytes() { du -sb "$1" | cut -f1; }

# --- the dataset -------------------------------------------------------------------
log "dataset: ${IMAGE_MIB} MiB ext4 image with ~${DATA_MIB} MiB of /usr files"
mkdir -p "$WORK/src" "$MNT"
have=0
for d in /usr/lib/x86_64-linux-gnu /usr/lib/jvm /usr/bin /usr/share /usr/lib/llvm-14 /usr/lib/gcc /usr/lib; do
    [ -d "$d" ] || continue
    (( have >= DATA_MIB )) && break
    sz=$(du -sm "$d" | cut -f1)
    if (( have + sz > DATA_MIB + 200 )); then
        # Too big as a whole: take its subdirectories and files one by one.
        while read -r s p; do
            (( have >= DATA_MIB )) && break
            (( have + s > DATA_MIB + 200 )) && continue
            mkdir -p "$WORK/src$(dirname "$p")"
            cp -a "$p" "$WORK/src$p" 2>/dev/null || true
            have=$((have + s))
        done < <(du -sm "$d"/* 2>/dev/null | sort -k2)
    else
        mkdir -p "$WORK/src$(dirname "$d")"
        cp -a "$d" "$WORK/src$d" 2>/dev/null || true
        have=$((have + sz))
    fi
done
mke2fs -q -F -t ext4 -d "$WORK/src" "$WORK/old.img" "${IMAGE_MIB}M"
rm -rf "$WORK/src"
cp --sparse=always "$WORK/old.img" "$WORK/new.img"
# A file to restore singly: the largest regular file in the image, under 16 MiB.
mount -o loop "$WORK/new.img" "$MNT"
used_kib=$(df -k --output=used "$MNT" | tail -1)
single=$(cd "$MNT" && find . -type f -size -16M -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2- | sed 's|^\.||')
# ~5 % of the image's blocks: overwrite 1 MiB in the middle of large files, append to
# others, delete some, create new ones (half random, half copies of text).
target=$((IMAGE_MIB * 1024 * 1024 / 20))
written=0
mapfile -t big < <(cd "$MNT" && find . -type f -size +4M | sort | head -n 400)
i=0
while (( written < target / 2 )) && (( i < ${#big[@]} )); do
    f="$MNT/${big[$i]}"
    sz=$(stat -c %s "$f")
    dd if=/dev/urandom of="$f" bs=1M count=1 seek=$((sz / 2 / 1048576)) conv=notrunc status=none
    written=$((written + 1048576)); i=$((i + 1))
done
mapfile -t mid < <(cd "$MNT" && find . -type f -size +64k -size -4M | sort | awk 'NR % 7 == 0')
for f in "${mid[@]:0:200}"; do
    (( written < target * 3 / 4 )) || break
    head -c 65536 /dev/urandom >> "$MNT/$f"; written=$((written + 65536))
done
for f in "${mid[@]:200:100}"; do rm -f "$MNT/$f"; done
mkdir -p "$MNT/new"
n=0
while (( written < target )); do
    head -c 1048576 /dev/urandom > "$MNT/new/r$n"
    cat "$MNT/${big[$n]}" 2>/dev/null | head -c 1048576 > "$MNT/new/t$n" || true
    written=$((written + 2 * 1048576)); n=$((n + 1))
done
umount "$MNT"
log "dataset: $((used_kib / 1024)) MiB used; $((written / 1048576)) MiB written through the loop mount; single file $single"

# FAT32 and NTFS images (256 MiB) for single-file restore.
mapfile -t some < <(find /usr/bin -maxdepth 1 -type f -size +100k -size -8M | sort | head -n 40)
mkfs.fat -C -F 32 "$WORK/fat.img" 262144 >/dev/null
mcopy -i "$WORK/fat.img" "${some[@]}" ::/
truncate -s 256M "$WORK/ntfs.img"
mkntfs -F -Q -q "$WORK/ntfs.img" 2>/dev/null
for f in "${some[@]}"; do ntfscp -q "$WORK/ntfs.img" "$f" "$(basename "$f")"; done
fat_file="/$(basename "${some[-1]}")"

# --- the runs ----------------------------------------------------------------------
declare -A R
keep() { # keep KEY VALUE [max]: the best of the rounds (min by default)
    local k=$1 v=$2 mode=${3:-min}
    if [[ -z ${R[$k]:-} ]] || awk -v a="$v" -v b="${R[$k]}" -v m="$mode" \
        'BEGIN { exit !((m == "min" && a < b) || (m == "max" && a > b)) }'; then
        R[$k]=$v
    fi
}
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export RESTIC_CACHE_DIR="$WORK/restic-cache" BORG_BASE_DIR="$WORK/borg-base"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
img_bytes=$(stat -c %s "$WORK/old.img")

for round in $(seq 1 "$ROUNDS"); do
    log "round $round: ours"
    sync
    out=$("$OURS" "$WORK" "$WORK/old.img" "$WORK/new.img" "-:$single" "$WORK/fat.img:$fat_file" \
        "$WORK/ntfs.img:$fat_file")
    log "$out"
    get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$out" | head -1; }
    keep ours_full_s "$(get full_s)"; keep ours_incr_s "$(get incr_s)"
    keep ours_added "$(get incr_added_bytes)"; keep ours_restore_s "$(get restore_s)"
    keep ours_verify_s "$(get verify_s)"; keep ours_verify_bytes "$(get verify_bytes)" max
    keep ours_verify_packs_s "$(get verify_packs_s)"
    keep ours_full_cpu_s "$(get full_cpu_s)"; keep ours_verify_cpu_s "$(get verify_cpu_s)"
    for fs in ext4 fat ntfs; do keep "ours_file_$fs" "$(get "file_restore_${fs}_s")"; done
    rm -rf "$WORK/ours-repo" "$WORK/lun.vmfs" "$WORK"/ours-file-*

    log "round $round: restic"
    r="$WORK/restic-repo"; rm -rf "$r" "$WORK/peer"; mkdir -p "$WORK/peer"
    restic -q -r "$r" init >/dev/null
    cp --sparse=always "$WORK/old.img" "$WORK/peer/disk.img"; sync
    t=$(now); restic -q -r "$r" backup "$WORK/peer/disk.img" >/dev/null; keep restic_full_s "$(since "$t")"
    b0=$(bytes "$r")
    cp --sparse=always "$WORK/new.img" "$WORK/peer/disk.img"; sync
    t=$(now); restic -q -r "$r" backup "$WORK/peer/disk.img" >/dev/null; keep restic_incr_s "$(since "$t")"
    keep restic_added $(( $(bytes "$r") - b0 ))
    rm -rf "$WORK/restore"; sync
    t=$(now); restic -q -r "$r" restore latest --target "$WORK/restore" >/dev/null; keep restic_restore_s "$(since "$t")"
    rm -rf "$WORK/restore"
    t=$(now); restic -q -r "$r" check --read-data >/dev/null; keep restic_verify_s "$(since "$t")"
    keep restic_repo_bytes "$(bytes "$r")" max
    rm -rf "$r"

    log "round $round: borg"
    r="$WORK/borg-repo"; rm -rf "$r"
    borg init -e repokey "$r" >/dev/null 2>&1
    cp --sparse=always "$WORK/old.img" "$WORK/peer/disk.img"; sync
    t=$(now); borg create --compression lz4 "$r::full" "$WORK/peer/disk.img"; keep borg_full_s "$(since "$t")"
    b0=$(bytes "$r")
    cp --sparse=always "$WORK/new.img" "$WORK/peer/disk.img"; sync
    t=$(now); borg create --compression lz4 "$r::incr" "$WORK/peer/disk.img"; keep borg_incr_s "$(since "$t")"
    keep borg_added $(( $(bytes "$r") - b0 ))
    mkdir -p "$WORK/restore"; sync
    t=$(now); (cd "$WORK/restore" && borg extract --sparse "$r::incr"); keep borg_restore_s "$(since "$t")"
    rm -rf "$WORK/restore"
    t=$(now); borg check --verify-data "$r" 2>/dev/null; keep borg_verify_s "$(since "$t")"
    keep borg_repo_bytes "$(bytes "$r")" max
    rm -rf "$r" "$WORK/peer"
done

# --- the figures -------------------------------------------------------------------
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
line() { # metric ours peer
    awk -v m="$1" -v o="$2" -v p="$3" 'BEGIN { printf "%s: ours=%s peer=%s ratio=%.2f\n", m, o, p, (p > 0 ? o / p : 0) }'
}
{
    echo "image ${img_bytes} bytes, $((used_kib / 1024)) MiB used, $((written / 1048576)) MiB changed; rounds $ROUNDS"
    echo "ours:   full ${R[ours_full_s]} s (${R[ours_full_cpu_s]} CPU s), incr ${R[ours_incr_s]} s (+${R[ours_added]} B), restore ${R[ours_restore_s]} s, verify ${R[ours_verify_s]} s (${R[ours_verify_cpu_s]} CPU s; ${R[ours_verify_bytes]} B), verify --read-packs ${R[ours_verify_packs_s]} s"
    echo "restic: full ${R[restic_full_s]} s, incr ${R[restic_incr_s]} s (+${R[restic_added]} B), restore ${R[restic_restore_s]} s, check --read-data ${R[restic_verify_s]} s (${R[restic_repo_bytes]} B)"
    echo "borg:   full ${R[borg_full_s]} s, incr ${R[borg_incr_s]} s (+${R[borg_added]} B), restore ${R[borg_restore_s]} s, check --verify-data ${R[borg_verify_s]} s (${R[borg_repo_bytes]} B)"
    echo "incremental time as a share of the full: ours $(awk -v a="${R[ours_incr_s]}" -v b="${R[ours_full_s]}" 'BEGIN { printf "%.1f", 100 * a / b }') %"
    line full_backup_MBps_vs_borg "$(mbps "$img_bytes" "${R[ours_full_s]}")" "$(mbps "$img_bytes" "${R[borg_full_s]}")"
    line full_backup_MBps_vs_restic "$(mbps "$img_bytes" "${R[ours_full_s]}")" "$(mbps "$img_bytes" "${R[restic_full_s]}")"
    line incremental_added_MiB_vs_restic "$(mbps "${R[ours_added]}" 1)" "$(mbps "${R[restic_added]}" 1)"
    line incremental_added_MiB_vs_borg "$(mbps "${R[ours_added]}" 1)" "$(mbps "${R[borg_added]}" 1)"
    line incremental_s_vs_restic "${R[ours_incr_s]}" "${R[restic_incr_s]}"
    line restore_MBps_vs_borg "$(mbps "$img_bytes" "${R[ours_restore_s]}")" "$(mbps "$img_bytes" "${R[borg_restore_s]}")"
    line restore_MBps_vs_restic "$(mbps "$img_bytes" "${R[ours_restore_s]}")" "$(mbps "$img_bytes" "${R[restic_restore_s]}")"
    line verify_MBps_vs_restic "$(mbps "${R[ours_verify_bytes]}" "${R[ours_verify_s]}")" "$(mbps "${R[restic_repo_bytes]}" "${R[restic_verify_s]}")"
    line verify_MBps_vs_borg "$(mbps "${R[ours_verify_bytes]}" "${R[ours_verify_s]}")" "$(mbps "${R[borg_repo_bytes]}" "${R[borg_verify_s]}")"
    line verify_read_packs_MBps_vs_borg "$(mbps "${R[ours_verify_bytes]}" "${R[ours_verify_packs_s]}")" "$(mbps "${R[borg_repo_bytes]}" "${R[borg_verify_s]}")"
    for fs in ext4 fat ntfs; do
        line "single_file_restore_${fs}_s_vs_restic_full_restore" "${R[ours_file_$fs]}" "${R[restic_restore_s]}"
    done
}
