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
    printf("EVIL-DONE\n");
    return EXIT_OK;
}
