#!/usr/bin/env python3
"""Writes a raw disk image holding the test guests' host pattern (see ../ABI.md).

usage: mkdisk.py IMAGE SECTORS_WITH_PATTERN [TOTAL_MIB]

Word j (0 <= j < 128, u32 little-endian) of sector s is 0x5eed0000 ^ (s * 0x9e3779b1) ^ j
(wrapping u32). The image is then extended (sparse) to TOTAL_MIB MiB when given.
"""
import struct
import sys


def sector(s: int) -> bytes:
    base = (0x5EED0000 ^ ((s * 0x9E3779B1) & 0xFFFFFFFF)) & 0xFFFFFFFF
    return struct.pack("<128I", *[base ^ j for j in range(128)])


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, count = sys.argv[1], int(sys.argv[2], 0)
    total = int(sys.argv[3], 0) * 1024 * 1024 if len(sys.argv) == 4 else 0
    with open(path, "wb") as f:
        for s in range(count):
            f.write(sector(s))
        if total > f.tell():
            f.truncate(total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
