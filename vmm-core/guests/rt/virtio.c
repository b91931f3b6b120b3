/* Modern virtio-mmio, one split virtqueue, polled (the guests run with interrupts off). */
#include "virtio.h"

/* One page per ring area; zeroed at every queue setup. */
static uint8_t queue_mem[4 * 4096] __attribute__((aligned(4096), section(".noinit.queue")));

static inline uint32_t rd(struct virtio_dev *d, uint32_t off) { return mmio_read32(d->base + off); }
static inline void wr(struct virtio_dev *d, uint32_t off, uint32_t v) { mmio_write32(d->base + off, v); }

int virtio_mmio_from_cmdline(int index, uint64_t *base, uint32_t *irq)
{
    char val[64];
    size_t pos = 0;
    for (int i = 0; i <= index; i++)
        if (!cmdline_next("virtio_mmio.device", &pos, val, sizeof val))
            return 0;
    /* <size>[K|M]@<base>:<irq> */
    uint64_t size, b, q;
    const char *p;
    if (!parse_u64(val, &size, &p))
        goto bad;
    if (*p == 'K' || *p == 'k' || *p == 'M' || *p == 'm')
        p++;
    if (*p++ != '@' || !parse_u64(p, &b, &p) || *p++ != ':' || !parse_u64(p, &q, &p))
        goto bad;
    if (b >= 0x100000000ull || (b & 3)) {
        printf("virtio_mmio.device=%s: base must be 4-aligned and below 4 GiB\n", val);
        return -1;
    }
    *base = b;
    *irq = (uint32_t)q;
    return 1;
bad:
    printf("bad command line: virtio_mmio.device=%s (want <size>@<base>:<irq>)\n", val);
    return -1;
}

int virtio_reset(struct virtio_dev *d)
{
    wr(d, VMMIO_STATUS, 0);
    uint64_t end = rdtsc() + tsc_ms_to_cycles(1000);
    while (rd(d, VMMIO_STATUS) != 0) {
        if (rdtsc() > end)
            return -1;
        delay_us(100);
    }
    return 0;
}

int virtio_blk_init(struct virtio_dev *d, uint64_t base, const char **why)
{
    memset(d, 0, sizeof *d);
    d->base = base;
    if (rd(d, VMMIO_MAGIC) != VIRTIO_MMIO_MAGIC) {
        *why = "no virtio-mmio magic";
        return EXIT_BAD_HARDWARE;
    }
    if (rd(d, VMMIO_VERSION) != 2) {
        *why = "virtio-mmio version is not 2 (QEMU: -global virtio-mmio.force-legacy=false)";
        return EXIT_BAD_HARDWARE;
    }
    if (rd(d, VMMIO_DEVICE_ID) != VIRTIO_ID_BLOCK) {
        *why = "device is not virtio-blk";
        return EXIT_BAD_HARDWARE;
    }
    if (virtio_reset(d) != 0) {
        *why = "timeout: device reset";
        return EXIT_CHECK_FAILED;
    }
    wr(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE);
    wr(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER);

    wr(d, VMMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = rd(d, VMMIO_DEVICE_FEATURES);
    wr(d, VMMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rd(d, VMMIO_DEVICE_FEATURES) << 32;
    if (!(offered & VIRTIO_F_VERSION_1)) {
        *why = "device does not offer VIRTIO_F_VERSION_1";
        return EXIT_BAD_HARDWARE;
    }
    d->features = offered & (VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_RO);
    wr(d, VMMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VMMIO_DRIVER_FEATURES, (uint32_t)d->features);
    wr(d, VMMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, VMMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
    wr(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK);
    if (!(rd(d, VMMIO_STATUS) & VSTAT_FEATURES_OK)) {
        *why = "device refused FEATURES_OK";
        return EXIT_BAD_HARDWARE;
    }

    wr(d, VMMIO_QUEUE_SEL, 0);
    uint32_t max = rd(d, VMMIO_QUEUE_NUM_MAX);
    if (max == 0) {
        *why = "queue 0 not available";
        return EXIT_BAD_HARDWARE;
    }
    if (rd(d, VMMIO_QUEUE_READY) != 0) {
        *why = "queue 0 ready before setup";
        return EXIT_BAD_HARDWARE;
    }
    d->qsize = (uint16_t)(max < VQ_MAX ? max : VQ_MAX);
    memset(queue_mem, 0, sizeof queue_mem);
    d->desc = (struct vq_desc *)(queue_mem + 0);
    d->avail = (struct vq_avail *)(queue_mem + 4096);
    d->used = (struct vq_used *)(queue_mem + 8192);
    d->hdr = (struct blk_req_hdr *)(queue_mem + 12288);
    d->status = queue_mem + 12288 + 64;
    d->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    uint64_t a;
    wr(d, VMMIO_QUEUE_NUM, d->qsize);
    a = (uint64_t)(uintptr_t)d->desc;
    wr(d, VMMIO_QUEUE_DESC_LOW, (uint32_t)a);
    wr(d, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(a >> 32));
    a = (uint64_t)(uintptr_t)d->avail;
    wr(d, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)a);
    wr(d, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(a >> 32));
    a = (uint64_t)(uintptr_t)d->used;
    wr(d, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)a);
    wr(d, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(a >> 32));
    wr(d, VMMIO_QUEUE_READY, 1);
    wr(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK | VSTAT_DRIVER_OK);

    /* Capacity: 64-bit config field read as two 32-bit halves under a stable generation. */
    for (int tries = 0; tries < 4; tries++) {
        uint32_t g = rd(d, VMMIO_CONFIG_GENERATION);
        uint64_t cap = rd(d, VMMIO_CONFIG) | ((uint64_t)rd(d, VMMIO_CONFIG + 4) << 32);
        if (rd(d, VMMIO_CONFIG_GENERATION) == g) {
            d->capacity = cap;
            return 0;
        }
    }
    *why = "config generation never settled";
    return EXIT_BAD_HARDWARE;
}

void virtq_post(struct virtio_dev *d, uint16_t head)
{
    d->avail->ring[d->avail_idx % d->qsize] = head;
    mfence(); /* descriptors and ring entry before the index */
    d->avail_idx++;
    *(volatile uint16_t *)&d->avail->idx = d->avail_idx;
    mfence(); /* index before the notify */
    wr(d, VMMIO_QUEUE_NOTIFY, 0);
}

int virtq_wait(struct virtio_dev *d, uint64_t timeout_ms, uint32_t *id, uint32_t *len)
{
    uint64_t end = rdtsc() + tsc_ms_to_cycles(timeout_ms);
    for (uint32_t n = 1;; n++) {
        if (*(volatile uint16_t *)&d->used->idx != d->used_idx) {
            barrier();
            const struct vq_used_elem *e = &d->used->ring[d->used_idx % d->qsize];
            *id = e->id;
            *len = e->len;
            d->used_idx++;
            return VQ_DONE;
        }
        /* The status register costs a VM exit: look at it only now and then. */
        if ((n & 63) == 0 && (rd(d, VMMIO_STATUS) & VSTAT_NEEDS_RESET))
            return VQ_NEEDS_RESET;
        if (rdtsc() > end)
            return VQ_TIMEOUT;
        cpu_relax();
    }
}

int blk_request(struct virtio_dev *d, uint32_t type, uint64_t sector, void *buf, uint32_t len,
                uint64_t timeout_ms)
{
    d->hdr->type = type;
    d->hdr->reserved = 0;
    d->hdr->sector = sector;
    *d->status = 0xff;
    struct vq_desc *t = d->desc;
    t[0].addr = (uint64_t)(uintptr_t)d->hdr;
    t[0].len = sizeof *d->hdr;
    t[0].flags = VIRTQ_DESC_F_NEXT;
    t[0].next = 1;
    uint16_t st = 1;
    if (len) {
        t[1].addr = (uint64_t)(uintptr_t)buf;
        t[1].len = len;
        t[1].flags = VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE);
        t[1].next = 2;
        st = 2;
    }
    t[st].addr = (uint64_t)(uintptr_t)d->status;
    t[st].len = 1;
    t[st].flags = VIRTQ_DESC_F_WRITE;
    t[st].next = 0;
    virtq_post(d, 0);
    uint32_t id, ulen;
    int r = virtq_wait(d, timeout_ms, &id, &ulen);
    if (r != VQ_DONE)
        return r;
    return *d->status;
}
