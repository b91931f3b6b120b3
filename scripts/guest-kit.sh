#!/usr/bin/env bash
# Builds the freestanding test guests and fetches the Linux guest kit, cached under
# target/guest-kit/ of the repository. Idempotent: says what it did or that it was up to date.
#
# usage: scripts/guest-kit.sh [--guests-only | --linux-only]
#
#   (default)      test guests + Linux kit
#   --guests-only  test guests only (needs gcc)
#   --linux-only   Linux kit only (needs apt-get, dpkg-deb, lz4, cpio, gzip)
#
# Environment: VINFRA_KERNEL / VINFRA_INITRD name a kernel / initramfs to use instead of the
# Debian ones (nothing is downloaded for the one given). Output: target/guest-kit/kit.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/vmm-core/guests"
KIT="$ROOT/target/guest-kit"
GUESTS="$KIT/guests"
LINUX="$KIT/linux"
GUEST_NAMES=(ready workload disk evil net)

say() { printf 'guest-kit: %s\n' "$*"; }
die() { printf 'guest-kit: error: %s\n' "$*" >&2; exit 1; }
need() { # need <command> <debian package>
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install the Debian package '$2' (apt-get install -y $2)"
}

mode=all
case "${1:-}" in
"") ;;
--guests-only) mode=guests ;;
--linux-only) mode=linux ;;
-h | --help)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown argument '$1' (want --guests-only, --linux-only or nothing)" ;;
esac

# ------------------------------------------------------------------ test guests

CFLAGS=(-m64 -std=gnu11 -ffreestanding -nostdlib -static -fno-pic -no-pie -mno-red-zone -O2
    -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables -fno-builtin
    -fcf-protection=none -Wall -Wextra -Werror)
# shellcheck disable=SC2054 # the commas belong to -Wl options
LDFLAGS=(-T "$SRC/rt/link.ld" -Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack)

build_guests() {
    need gcc gcc
    mkdir -p "$GUESTS/obj"
    local common=("$SRC/rt/entry.S" "$SRC/rt/rt.c" "$SRC/rt/virtio.c")
    local deps=("${common[@]}" "$SRC/rt/rt.h" "$SRC/rt/virtio.h" "$SRC/rt/link.ld" "${BASH_SOURCE[0]}")
    # The flags are part of the inputs: a change of flags rebuilds.
    local stamp="$GUESTS/obj/flags"
    local flags
    flags="${CFLAGS[*]} ${LDFLAGS[*]} $(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$flags" ]]; then
        rm -f "$GUESTS"/*.elf
        printf '%s' "$flags" >"$stamp"
    fi
    local name
    for name in "${GUEST_NAMES[@]}"; do
        local out="$GUESTS/$name.elf" stale=0 f
        [[ -f "$out" ]] || stale=1
        for f in "${deps[@]}" "$SRC/$name.c"; do
            [[ "$f" -nt "$out" ]] && stale=1
        done
        if ((stale == 0)); then
            say "$name.elf up to date"
            continue
        fi
        local objs=() src
        for src in "${common[@]}" "$SRC/$name.c"; do
            local o
            o="$GUESTS/obj/$name-$(basename "${src%.*}").o"
            gcc "${CFLAGS[@]}" -I"$SRC" -c "$src" -o "$o" || die "compiling $src failed"
            objs+=("$o")
        done
        gcc "${CFLAGS[@]}" "${LDFLAGS[@]}" "${objs[@]}" -lgcc -o "$out.tmp" || die "linking $name.elf failed"
        mv "$out.tmp" "$out"
        say "built $name.elf"
    done
}

# ------------------------------------------------------------------- Linux kit

# Extracts the ELF vmlinux from an LZ4-compressed bzImage.
extract_vmlinux() { # <bzImage> <out>
    local img="$1" out="$2" off
    off="$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$img" | head -n1 | cut -d: -f1 || true)"
    [[ -n "$off" ]] || die "no LZ4 (legacy) stream in $img: only LZ4-compressed kernels are supported"
    # The stream is followed by the rest of the bzImage; lz4 complains about it, the output is whole.
    tail -c +"$((off + 1))" "$img" | lz4 -dc >"$out.tmp" 2>/dev/null || true
    [[ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' \n')" == "7f454c46" ]] ||
        die "decompressing the kernel in $img did not give an ELF"
    mv "$out.tmp" "$out"
}

# Prints the Debian package that a metapackage's Depends names first matching a pattern.
dep_of() { # <deb> <regex>
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//; s/|.*//' | grep -E "$2" | head -n1
}

# As root, apt's sandbox user cannot write into our cache: download as root, quietly.
APT_DOWNLOAD=(apt-get -q -o APT::Sandbox::User=root download)

fetch_linux() {
    mkdir -p "$LINUX"
    local dl="$LINUX/debs" root="$LINUX/root"
    local kernel="" initrd=""
    if [[ -n "${VINFRA_KERNEL:-}" ]]; then
        [[ -f "$VINFRA_KERNEL" ]] || die "VINFRA_KERNEL=$VINFRA_KERNEL does not exist"
        say "VINFRA_KERNEL set: will use $VINFRA_KERNEL (no kernel download)"
        kernel="$VINFRA_KERNEL"
    fi
    if [[ -n "${VINFRA_INITRD:-}" ]]; then
        [[ -f "$VINFRA_INITRD" ]] || die "VINFRA_INITRD=$VINFRA_INITRD does not exist"
        say "VINFRA_INITRD set: will use $VINFRA_INITRD (no initramfs build)"
        initrd="$VINFRA_INITRD"
    fi

    if [[ -z "$kernel" || -z "$initrd" ]]; then
        need apt-get apt
        need dpkg-deb dpkg
        mkdir -p "$dl"
        # Debian packages: the kernel (through its metapackage) and busybox.
        local meta kpkg
        meta="$(ls "$dl"/linux-image-cloud-amd64_*.deb 2>/dev/null | head -n1 || true)"
        if [[ -z "$meta" ]]; then
            (cd "$dl" && "${APT_DOWNLOAD[@]}" linux-image-cloud-amd64 >/dev/null) ||
                die "apt-get download linux-image-cloud-amd64 failed (run apt-get update first?)"
            meta="$(ls "$dl"/linux-image-cloud-amd64_*.deb | head -n1)"
            say "downloaded $(basename "$meta")"
        fi
        kpkg="$(dep_of "$meta" '^linux-image-[0-9].*-cloud-amd64')"
        [[ -n "$kpkg" ]] || die "$(basename "$meta") names no linux-image-*-cloud-amd64 dependency"
        if ! ls "$dl/${kpkg}"_*.deb >/dev/null 2>&1; then
            (cd "$dl" && "${APT_DOWNLOAD[@]}" "$kpkg" >/dev/null) || die "apt-get download $kpkg failed"
            say "downloaded $kpkg"
        fi
        if [[ ! -d "$root/$kpkg" ]]; then
            rm -rf "$root/$kpkg.tmp"
            mkdir -p "$root/$kpkg.tmp"
            dpkg-deb -x "$dl/${kpkg}"_*.deb "$root/$kpkg.tmp" || die "dpkg-deb -x of $kpkg failed"
            mv "$root/$kpkg.tmp" "$root/$kpkg"
            say "extracted $kpkg"
        fi
        KROOT="$root/$kpkg"
        KVER="$(ls "$KROOT/lib/modules" 2>/dev/null | head -n1 || true)"
        [[ -n "$KVER" ]] || die "no lib/modules in $kpkg"
    fi

    if [[ -z "$kernel" ]]; then
        need lz4 lz4
        local vmlinuz="$KROOT/boot/vmlinuz-$KVER"
        [[ -f "$vmlinuz" ]] || die "no boot/vmlinuz-$KVER in the kernel package"
        if ! cmp -s "$vmlinuz" "$LINUX/bzImage"; then
            cp "$vmlinuz" "$LINUX/bzImage"
            say "copied bzImage ($KVER)"
        else
            say "bzImage up to date ($KVER)"
        fi
        if [[ ! -f "$LINUX/vmlinux" || "$LINUX/bzImage" -nt "$LINUX/vmlinux" ]]; then
            extract_vmlinux "$LINUX/bzImage" "$LINUX/vmlinux"
            say "extracted vmlinux (ELF) from bzImage"
        else
            say "vmlinux up to date"
        fi
        LINUX_BZIMAGE="$LINUX/bzImage"
        LINUX_VMLINUX="$LINUX/vmlinux"
    else
        LINUX_BZIMAGE="$kernel"
        LINUX_VMLINUX="$kernel"
    fi

    if [[ -z "$initrd" ]]; then
        build_initramfs
        LINUX_INITRD="$LINUX/initramfs.cpio.gz"
    else
        LINUX_INITRD="$initrd"
    fi
}

build_initramfs() {
    need cpio cpio
    need gzip gzip
    local dl="$LINUX/debs" root="$LINUX/root" out="$LINUX/initramfs.cpio.gz"
    local bb
    bb="$(ls "$dl"/busybox-static_*.deb 2>/dev/null | head -n1 || true)"
    if [[ -z "$bb" ]]; then
        (cd "$dl" && "${APT_DOWNLOAD[@]}" busybox-static >/dev/null) || die "apt-get download busybox-static failed"
        bb="$(ls "$dl"/busybox-static_*.deb | head -n1)"
        say "downloaded $(basename "$bb")"
    fi
    # Inputs: busybox, the kernel package, this script.
    if [[ -f "$out" && ! "$bb" -nt "$out" && ! "$KROOT" -nt "$out" && ! "${BASH_SOURCE[0]}" -nt "$out" ]]; then
        say "initramfs.cpio.gz up to date"
        return
    fi
    if [[ ! -d "$root/busybox" ]]; then
        rm -rf "$root/busybox.tmp"
        mkdir -p "$root/busybox.tmp"
        dpkg-deb -x "$bb" "$root/busybox.tmp" || die "dpkg-deb -x of busybox-static failed"
        mv "$root/busybox.tmp" "$root/busybox"
    fi
    local stage="$LINUX/initramfs.stage"
    rm -rf "$stage"
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,etc,root,lib/modules/"$KVER"}
    cp "$root/busybox/bin/busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"

    # virtio modules and what they depend on, decompressed (busybox insmod takes plain .ko).
    # The .deb has no modules.dep (depmod makes it at install): read each module's
    # .modinfo "depends=" field instead.
    local mdir="$KROOT/lib/modules/$KVER" order=() seen=" "
    find_mod() { # <name> -> path relative to $mdir
        local n="$1" f
        f="$(cd "$mdir" && find kernel -regextype posix-extended \
            -regex ".*/(${n}|${n//_/-})\.ko(\.xz|\.zst|\.gz)?" | head -n1)"
        [[ -n "$f" ]] || die "module $n not found under lib/modules/$KVER of the kernel package"
        printf '%s' "$f"
    }
    cat_mod() { # <rel> -> plain .ko on stdout
        case "$1" in
        *.xz) need xz xz-utils && xz -dc "$mdir/$1" ;;
        *.zst) need zstd zstd && zstd -qdc "$mdir/$1" ;;
        *.gz) gzip -dc "$mdir/$1" ;;
        *) cat "$mdir/$1" ;;
        esac
    }
    add_mod() { # depth-first: dependencies first
        local name="$1" rel dep deps
        [[ "$seen" == *" $name "* ]] && return
        seen+="$name "
        rel="$(find_mod "$name")"
        deps="$(cat_mod "$rel" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')"
        for dep in $deps; do
            add_mod "$dep"
        done
        cat_mod "$rel" >"$stage/lib/modules/$KVER/$name.ko"
        order+=("$name")
    }
    add_mod virtio_mmio
    add_mod virtio_blk
    printf '%s\n' "${order[@]}" >"$stage/etc/modules"

    cat >"$stage/init" <<INIT
#!/bin/busybox sh
# vinfra test initramfs: load virtio, say ready, then a shell (vinfra.shell=1) or power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || mdev -s
KVER=$KVER
for m in \$(cat /etc/modules); do
    modprobe "\$m" 2>/dev/null || insmod "/lib/modules/\$KVER/\$m.ko" 2>/dev/null || echo "vinfra-init: cannot load \$m"
done
echo VINFRA-READY
if grep -q 'vinfra.shell=1' /proc/cmdline; then
    setsid cttyhack sh || sh
fi
poweroff -f
reboot -f
INIT
    chmod +x "$stage/init"
    if [[ "$(id -u)" == 0 ]]; then
        mknod -m 600 "$stage/dev/console" c 5 1
        mknod -m 666 "$stage/dev/null" c 1 3
    else
        say "warning: not root, no /dev/console in the initramfs (the kernel's devtmpfs still provides it)"
    fi
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$stage"
    say "built initramfs.cpio.gz (busybox, modules: ${order[*]})"
}

# ------------------------------------------------------------------ manifest

write_manifest() {
    local env="$KIT/kit.env" tmp old_linux="" n
    mkdir -p "$KIT"
    if [[ -f "$env" ]]; then
        old_linux="$(grep -E '^LINUX_(BZIMAGE|VMLINUX|INITRD)=' "$env" || true)"
    fi
    tmp="$(mktemp "$KIT/kit.env.XXXXXX")"
    for n in "${GUEST_NAMES[@]}"; do # built now or earlier
        if [[ -f "$GUESTS/$n.elf" ]]; then
            printf '%s_ELF=%s\n' "${n^^}" "$GUESTS/$n.elf" >>"$tmp"
        fi
    done
    if [[ "$mode" != guests ]]; then
        printf 'LINUX_BZIMAGE=%s\nLINUX_VMLINUX=%s\nLINUX_INITRD=%s\n' "$LINUX_BZIMAGE" "$LINUX_VMLINUX" \
            "$LINUX_INITRD" >>"$tmp"
    elif [[ -n "$old_linux" ]]; then
        printf '%s\n' "$old_linux" >>"$tmp"
    fi
    mv "$tmp" "$env"
    say "wrote $env"
}

# Tests may call this script concurrently: one builder at a time.
mkdir -p "$KIT"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$KIT/.lock"
    flock 9
fi
[[ "$mode" == linux ]] || build_guests
[[ "$mode" == guests ]] || fetch_linux
write_manifest
