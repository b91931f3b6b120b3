/* disk: checks a virtio-blk device end to end (see ABI.md), optionally benchmarks it. */
#include "rt/virtio.h"

#define REQ_BYTES 65536u
#define REQ_SECTORS (REQ_BYTES / 512u)
#define IO_TIMEOUT_MS 5000

static uint8_t buf[REQ_BYTES] __attribute__((aligned(4096), section(".noinit.buf")));
static struct virtio_dev dev;

static int fail(const char *why)
{
    printf("DISK-FAIL %s\n", why);
    return EXIT_CHECK_FAILED;
}

static const char *io_error(int r)
{
    switch (r) {
    case VQ_TIMEOUT:
        return "timeout";
    case VQ_NEEDS_RESET:
        return "device needs reset";
    case VIRTIO_BLK_S_IOERR:
        return "status IOERR";
    case VIRTIO_BLK_S_UNSUPP:
        return "status UNSUPP";
    default:
        return "bad status";
    }
}

static inline uint32_t host_word(uint64_t s, uint32_t j) { return 0x5eed0000u ^ ((uint32_t)s * 0x9e3779b1u) ^ j; }

/* Fills or checks `count` sectors from `first` (relative to the pattern's sector numbers). */
static void fill(uint64_t first, uint32_t count, uint32_t xor)
{
    uint32_t *w = (uint32_t *)buf;
    for (uint32_t s = 0; s < count; s++) {
        uint32_t base = host_word(first + s, 0) ^ xor;
        for (uint32_t j = 0; j < 128; j++)
            *w++ = base ^ j;
    }
}

static int check(uint64_t first, uint32_t count, uint32_t xor, uint64_t *bad_sector, uint32_t *bad_word)
{
    const uint32_t *w = (const uint32_t *)buf;
    for (uint32_t s = 0; s < count; s++) {
        uint32_t base = host_word(first + s, 0) ^ xor;
        for (uint32_t j = 0; j < 128; j++, w++)
            if (*w != (base ^ j)) {
                *bad_sector = first + s;
                *bad_word = j;
                return 0;
            }
    }
    return 1;
}

/* Reads sectors [first, first+n) and checks them against pattern ^ xor. */
static int read_check(uint64_t first, uint64_t n, uint32_t xor, const char *what)
{
    char why[96];
    for (uint64_t s = first; s < first + n; s += REQ_SECTORS) {
        uint32_t cnt = (uint32_t)(first + n - s < REQ_SECTORS ? first + n - s : REQ_SECTORS);
        int r = blk_request(&dev, VIRTIO_BLK_T_IN, s, buf, cnt * 512, IO_TIMEOUT_MS);
        if (r != VIRTIO_BLK_S_OK) {
            snprintf(why, sizeof why, "read of sector %lu: %s", s, io_error(r));
            return fail(why);
        }
        uint64_t bs;
        uint32_t bw;
        if (!check(s, cnt, xor, &bs, &bw)) {
            const uint32_t *w = (const uint32_t *)buf + (bs - s) * 128 + bw;
            snprintf(why, sizeof why, "%s mismatch at sector %lu word %u: got 0x%08x want 0x%08x", what,
                     bs, bw, *w, host_word(bs, bw) ^ xor);
            return fail(why);
        }
    }
    return 0;
}

static void print_rate(const char *name, uint64_t bytes, uint64_t cycles)
{
    uint64_t us = tsc_cycles_to_us(cycles);
    if (!us)
        us = 1;
    uint64_t x100 = bytes * 100000000ull / us / MIB; /* MiB/s times 100 */
    printf("%s=%lu.%02lu", name, x100 / 100, x100 % 100);
}

static int bench(uint64_t mib, uint64_t start)
{
    uint64_t reqs = mib * MIB / REQ_BYTES;
    if (start + reqs * REQ_SECTORS > dev.capacity) {
        char why[96];
        snprintf(why, sizeof why, "disk too small for bench: need %lu sectors, have %lu",
                 start + reqs * REQ_SECTORS, dev.capacity);
        return fail(why);
    }
    uint64_t cyc[2];
    uint32_t types[2] = {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
    for (int k = 0; k < 2; k++) {
        uint64_t t0 = rdtsc();
        for (uint64_t i = 0; i < reqs; i++) {
            int r = blk_request(&dev, types[k], start + i * REQ_SECTORS, buf, REQ_BYTES, IO_TIMEOUT_MS);
            if (r != VIRTIO_BLK_S_OK) {
                char why[96];
                snprintf(why, sizeof why, "bench %s of sector %lu: %s", k ? "write" : "read",
                         start + i * REQ_SECTORS, io_error(r));
                return fail(why);
            }
        }
        cyc[k] = rdtsc() - t0;
    }
    if (dev.features & VIRTIO_BLK_F_FLUSH)
        blk_request(&dev, VIRTIO_BLK_T_FLUSH, 0, 0, 0, IO_TIMEOUT_MS);
    printf("DISK-BENCH ");
    print_rate("read_mib_s", reqs * REQ_BYTES, cyc[0]);
    serial_putc(' ');
    print_rate("write_mib_s", reqs * REQ_BYTES, cyc[1]);
    printf(" mib=%lu tsc_khz=%lu tsc=%s\n", mib, tsc_khz(), tsc_source());
    return 0;
}

int guest_main(void)
{
    uint64_t sectors, bench_mib, base;
    uint32_t irq;
    char why[96];
    if (cmdline_u64("disk.sectors", 64, &sectors) < 0 || cmdline_u64("disk.bench_mib", 0, &bench_mib) < 0)
        return EXIT_BAD_CMDLINE;
    if (sectors == 0 || sectors > (1ull << 30)) {
        printf("DISK-FAIL disk.sectors must be 1..2^30\n");
        return EXIT_BAD_CMDLINE;
    }
    int found = virtio_mmio_from_cmdline(0, &base, &irq);
    if (found < 0)
        return EXIT_BAD_CMDLINE;
    if (found == 0) {
        printf("DISK-FAIL no virtio_mmio.device= on the command line\n");
        return EXIT_BAD_HARDWARE;
    }
    const char *err;
    int rc = virtio_blk_init(&dev, base, &err);
    if (rc) {
        printf("DISK-FAIL virtio-mmio at 0x%lx: %s\n", base, err);
        return rc;
    }
    if (dev.features & VIRTIO_BLK_F_RO)
        return fail("device is read-only");
    if (dev.capacity < 2 * sectors) {
        snprintf(why, sizeof why, "disk has %lu sectors, need %lu", dev.capacity, 2 * sectors);
        return fail(why);
    }

    /* 1. host pattern */
    if ((rc = read_check(0, sectors, 0, "host pattern")))
        return rc;
    /* 2. guest pattern written to S..2S, flushed, read back */
    for (uint64_t s = sectors; s < 2 * sectors; s += REQ_SECTORS) {
        uint32_t cnt = (uint32_t)(2 * sectors - s < REQ_SECTORS ? 2 * sectors - s : REQ_SECTORS);
        fill(s, cnt, 0xffffffffu);
        int r = blk_request(&dev, VIRTIO_BLK_T_OUT, s, buf, cnt * 512, IO_TIMEOUT_MS);
        if (r != VIRTIO_BLK_S_OK) {
            snprintf(why, sizeof why, "write of sector %lu: %s", s, io_error(r));
            return fail(why);
        }
    }
    if (dev.features & VIRTIO_BLK_F_FLUSH) {
        int r = blk_request(&dev, VIRTIO_BLK_T_FLUSH, 0, 0, 0, IO_TIMEOUT_MS);
        if (r != VIRTIO_BLK_S_OK) {
            snprintf(why, sizeof why, "flush: %s", io_error(r));
            return fail(why);
        }
    }
    if ((rc = read_check(sectors, sectors, 0xffffffffu, "guest pattern")))
        return rc;
    /* 3. GET_ID: up to 20 bytes, NUL-padded when shorter */
    char id[24];
    memset(buf, 0, 20);
    int r = blk_request(&dev, VIRTIO_BLK_T_GET_ID, 0, buf, 20, IO_TIMEOUT_MS);
    if (r != VIRTIO_BLK_S_OK) {
        snprintf(why, sizeof why, "get_id: %s", io_error(r));
        return fail(why);
    }
    int n = 0;
    for (; n < 20 && buf[n]; n++)
        id[n] = (buf[n] > ' ' && buf[n] < 127) ? (char)buf[n] : '?';
    id[n] = 0;
    /* 4. optional bench, in the region after both patterns (64 KiB aligned) */
    if (bench_mib && (rc = bench(bench_mib, (2 * sectors + REQ_SECTORS - 1) / REQ_SECTORS * REQ_SECTORS)))
        return rc;
    printf("DISK-OK sectors=%lu id=%s\n", sectors, id);
    return EXIT_OK;
}
