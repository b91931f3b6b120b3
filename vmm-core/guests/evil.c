/* evil: misbehaves on purpose (see ABI.md) and reports how the VMM answered. Each virtio
 * case starts from a freshly reset device so one case's damage cannot hide the next. */
#include "rt/virtio.h"

#define EVIL_TIMEOUT_MS 300
#define HOLE_ADDR 0xc0000000ull      /* MMIO hole: no RAM, no device (ours or QEMU microvm) */
#define FAR_ADDR 0x4000000000ull     /* 256 GiB: beyond any test VM's RAM */

static uint8_t buf[65536] __attribute__((aligned(4096), section(".noinit.buf")));
static struct virtio_dev dev;

static void report(const char *name, int r)
{
    if (r == VQ_TIMEOUT)
        printf("EVIL %s status=none\n", name);
    else if (r == VQ_NEEDS_RESET)
        printf("EVIL %s status=none needs_reset=1\n", name);
    else
        printf("EVIL %s status=%d\n", name, r);
}

static int setup(uint64_t base)
{
    const char *why;
    int rc = virtio_blk_init(&dev, base, &why);
    if (rc)
        printf("EVIL-FAIL virtio-mmio at 0x%lx: %s\n", base, why);
    return rc;
}

/* Posts a hand-made chain with head `head` and waits for the answer. */
static int post_and_wait(uint16_t head)
{
    uint32_t id, len;
    *dev.status = 0xff;
    virtq_post(&dev, head);
    int r = virtq_wait(&dev, EVIL_TIMEOUT_MS, &id, &len);
    return r == VQ_DONE ? *dev.status : r;
}

static void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    dev.desc[i].addr = addr;
    dev.desc[i].len = len;
    dev.desc[i].flags = flags;
    dev.desc[i].next = next;
}

static void header(uint32_t type, uint64_t sector)
{
    dev.hdr->type = type;
    dev.hdr->reserved = 0;
    dev.hdr->sector = sector;
}

/* ---- virtio-net attacks: a bare two-queue setup, hostile chains on each queue ---- */
#define NQ 8
static uint8_t net_mem[2][3 * 4096] __attribute__((aligned(4096), section(".noinit.net")));
static uint64_t nbase;
static struct vq_desc *nd[2];
static struct vq_avail *na[2];
static struct vq_used *nu[2];
static uint16_t navail[2];

static void nwr(uint32_t off, uint32_t v) { mmio_write32(nbase + off, v); }
static uint32_t nrd(uint32_t off) { return mmio_read32(nbase + off); }

static int net_setup(void)
{
    nwr(VMMIO_STATUS, 0);
    nwr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER);
    nwr(VMMIO_DRIVER_FEATURES_SEL, 0);
    nwr(VMMIO_DRIVER_FEATURES, 1u << 5);
    nwr(VMMIO_DRIVER_FEATURES_SEL, 1);
    nwr(VMMIO_DRIVER_FEATURES, 1);
    nwr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK);
    for (int q = 0; q < 2; q++) {
        memset(net_mem[q], 0, sizeof net_mem[q]);
        nd[q] = (struct vq_desc *)net_mem[q];
        na[q] = (struct vq_avail *)(net_mem[q] + 4096);
        nu[q] = (struct vq_used *)(net_mem[q] + 8192);
        na[q]->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
        navail[q] = 0;
        nwr(VMMIO_QUEUE_SEL, (uint32_t)q);
        nwr(VMMIO_QUEUE_NUM, NQ);
        nwr(VMMIO_QUEUE_DESC_LOW, (uint32_t)(uintptr_t)nd[q]);
        nwr(VMMIO_QUEUE_DESC_HIGH, 0);
        nwr(VMMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)na[q]);
        nwr(VMMIO_QUEUE_DRIVER_HIGH, 0);
        nwr(VMMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)nu[q]);
        nwr(VMMIO_QUEUE_DEVICE_HIGH, 0);
        nwr(VMMIO_QUEUE_READY, 1);
    }
    nwr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK | VSTAT_DRIVER_OK);
    return (nrd(VMMIO_STATUS) & VSTAT_DRIVER_OK) ? 0 : -1;
}

/* Offers descriptor `head` on queue q, notifies, waits up to 100 ms for the used ring. */
static void net_case(const char *name, int q, uint16_t head, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    if (net_setup()) {
        printf("EVIL net_%s setup refused\n", name);
        return;
    }
    nd[q][head % NQ].addr = addr;
    nd[q][head % NQ].len = len;
    nd[q][head % NQ].flags = flags;
    nd[q][head % NQ].next = next;
    na[q]->ring[0] = head;
    mfence();
    *(volatile uint16_t *)&na[q]->idx = ++navail[q];
    mfence();
    nwr(VMMIO_QUEUE_NOTIFY, (uint32_t)q);
    uint64_t end = rdtsc() + tsc_ms_to_cycles(100);
    while (*(volatile uint16_t *)&nu[q]->idx == 0 && rdtsc() < end)
        cpu_relax();
    printf("EVIL net_%s used=%u needs_reset=%u\n", name, *(volatile uint16_t *)&nu[q]->idx,
           (nrd(VMMIO_STATUS) & VSTAT_NEEDS_RESET) ? 1 : 0);
}

static void evil_net(uint64_t b)
{
    nbase = b;
    uint64_t frame = (uint64_t)(uintptr_t)buf;
    memset(buf, 0, 128);
    for (int i = 0; i < 6; i++)
        buf[12 + i] = 0xff; /* broadcast destination after the 12-byte header */
    for (int i = 0; i < 6; i++)
        buf[18 + i] = mmio_read8(b + VMMIO_CONFIG + (uint32_t)i); /* our MAC as source */
    net_case("tx_outside_ram", 1, 0, FAR_ADDR, 100, 0, 0);
    net_case("tx_writable", 1, 0, frame, 100, VIRTQ_DESC_F_WRITE, 0);
    net_case("tx_oversized", 1, 0, frame, sizeof buf, 0, 0);
    net_case("tx_loop", 1, 0, frame, 100, VIRTQ_DESC_F_NEXT, 0);
    net_case("tx_index_oob", 1, NQ + 3, frame, 100, 0, 0);
    net_case("rx_outside_ram", 0, 0, FAR_ADDR, 2048, VIRTQ_DESC_F_WRITE, 0);
    net_case("rx_read_only", 0, 0, frame, 2048, 0, 0);
    /* A flood: the available index claims 60000 chains (a runaway index). */
    if (!net_setup()) {
        for (int i = 0; i < NQ; i++) {
            nd[1][i].addr = frame;
            nd[1][i].len = 74;
            nd[1][i].flags = 0;
            na[1]->ring[i] = 0;
        }
        mfence();
        *(volatile uint16_t *)&na[1]->idx = 60000;
        mfence();
        for (int i = 0; i < 1000; i++)
            nwr(VMMIO_QUEUE_NOTIFY, 1);
        printf("EVIL net_tx_flood needs_reset=%u\n", (nrd(VMMIO_STATUS) & VSTAT_NEEDS_RESET) ? 1 : 0);
    }
    /* After all that, a plain frame goes out. */
    net_case("recovery", 1, 0, frame, 12 + 60, 0, 0);
    nwr(VMMIO_STATUS, 0);
}

int guest_main(void)
{
    /* 1. unmapped guest-physical address in the MMIO hole */
    volatile uint32_t *hole = (volatile uint32_t *)(uintptr_t)HOLE_ADDR;
    *hole = 0xdeadbeef;
    uint32_t v = *hole;
    printf("EVIL mmio_hole status=ok read=0x%08x\n", v);

    uint64_t base;
    uint32_t irq;
    int found = virtio_mmio_from_cmdline(0, &base, &irq);
    if (found < 0)
        return EXIT_BAD_CMDLINE;
    if (found == 0) {
        printf("EVIL-FAIL no virtio_mmio.device= on the command line\n");
        return EXIT_BAD_HARDWARE;
    }
    uint64_t hdr = 0, st = 0;
    int rc;
#define SETUP()                                            \
    do {                                                   \
        if ((rc = setup(base)))                            \
            return rc;                                     \
        hdr = (uint64_t)(uintptr_t)dev.hdr;                \
        st = (uint64_t)(uintptr_t)dev.status;              \
    } while (0)

    /* 2. data descriptor far outside guest RAM */
    SETUP();
    header(VIRTIO_BLK_T_IN, 0);
    set_desc(0, hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, FAR_ADDR, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    set_desc(2, st, 1, VIRTQ_DESC_F_WRITE, 0);
    report("desc_outside_ram", post_and_wait(0));

    /* 3. data descriptor that starts in RAM and runs past its end */
    SETUP();
    uint64_t top = ram_end_from(0x100000);
    header(VIRTIO_BLK_T_IN, 0);
    set_desc(0, hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, top - 512, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    set_desc(2, st, 1, VIRTQ_DESC_F_WRITE, 0);
    report("desc_straddles_ram_end", post_and_wait(0));

    /* 4. descriptor chain that loops: 0 -> 1 -> 0 (all device-readable, so only a loop
     *    check stops it) */
    SETUP();
    header(VIRTIO_BLK_T_IN, 0);
    set_desc(0, hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, (uint64_t)(uintptr_t)buf, 512, VIRTQ_DESC_F_NEXT, 0);
    report("desc_loop", post_and_wait(0));

    /* 5. avail ring names a descriptor index beyond the queue size */
    SETUP();
    report("desc_index_oob", post_and_wait((uint16_t)(dev.qsize + 3)));

    /* 6. request header shorter than 16 bytes */
    SETUP();
    header(VIRTIO_BLK_T_IN, 0);
    set_desc(0, hdr, 8, VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, st, 1, VIRTQ_DESC_F_WRITE, 0);
    report("short_header", post_and_wait(0));

    /* 7. read that runs past the end of the disk */
    SETUP();
    int r = blk_request(&dev, VIRTIO_BLK_T_IN, dev.capacity ? dev.capacity - 1 : 0, buf, sizeof buf,
                        EVIL_TIMEOUT_MS);
    report("read_past_end", r);

    /* 8. after a reset the device must work again */
    SETUP();
    r = blk_request(&dev, VIRTIO_BLK_T_IN, 0, buf, 512, 5000);
    report("recovery", r);
    virtio_reset(&dev);

    /* 9. a virtio-net device, when there is one among the other entries */
    for (int i = 1; i < 8; i++) {
        uint64_t nb;
        uint32_t nirq;
        if (virtio_mmio_from_cmdline(i, &nb, &nirq) <= 0)
            break;
        if (mmio_read32(nb + VMMIO_MAGIC) == VIRTIO_MMIO_MAGIC && mmio_read32(nb + VMMIO_DEVICE_ID) == 1) {
            evil_net(nb);
            break;
        }
    }
    printf("EVIL-DONE\n");
    return EXIT_OK;
}
