/* net: a small host on a virtio-net NIC (see ABI.md): answers ARP and ICMP echo, runs a
 * UDP echo service and a UDP sink, and can ping a peer or send a UDP stream. Polled, with
 * interrupts off, like every test guest. */
#include "rt/virtio.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_F_MAC (1ull << 5)
#define NQ 16                 /* entries per queue */
#define BUF_BYTES 2048        /* one buffer per descriptor: header + frame */
#define HDR 12                /* virtio_net_hdr with VERSION_1 */
#define FRAME_MAX 1514

struct ring {
    struct vq_desc *desc;
    struct vq_avail *avail;
    struct vq_used *used;
    uint16_t avail_idx, used_idx;
    uint8_t *bufs;
};

/* Per queue: descriptors, avail, used (one page each), then NQ buffers. */
static uint8_t qmem[2][3 * 4096 + NQ * BUF_BYTES] __attribute__((aligned(4096), section(".noinit.net")));
static struct ring rx, tx;
static uint64_t base;
static uint8_t mac[6], ip[4];
static uint64_t echo_port = 7, sink_port = 9, quiet;
static uint64_t tx_sent, tx_full;

/* ARP cache: a few peers. */
#define ARP_N 8
static struct { uint8_t ip[4], mac[6]; int used; } arp[ARP_N];

static inline uint32_t rd(uint32_t off) { return mmio_read32(base + off); }
static inline void wr(uint32_t off, uint32_t v) { mmio_write32(base + off, v); }
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static int parse_ip(const char *s, uint8_t out[4], const char **end)
{
    for (int i = 0; i < 4; i++) {
        uint64_t v;
        if (!parse_u64(s, &v, &s) || v > 255)
            return 0;
        out[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.')
            return 0;
    }
    if (end)
        *end = s;
    return 1;
}

static void ring_setup(struct ring *r, int q)
{
    uint8_t *m = qmem[q];
    memset(m, 0, 3 * 4096);
    r->desc = (struct vq_desc *)m;
    r->avail = (struct vq_avail *)(m + 4096);
    r->used = (struct vq_used *)(m + 8192);
    r->bufs = m + 3 * 4096;
    r->avail_idx = r->used_idx = 0;
    r->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    wr(VMMIO_QUEUE_SEL, (uint32_t)q);
    wr(VMMIO_QUEUE_NUM, NQ);
    uint64_t a = (uint64_t)(uintptr_t)r->desc;
    wr(VMMIO_QUEUE_DESC_LOW, (uint32_t)a);
    wr(VMMIO_QUEUE_DESC_HIGH, (uint32_t)(a >> 32));
    a = (uint64_t)(uintptr_t)r->avail;
    wr(VMMIO_QUEUE_DRIVER_LOW, (uint32_t)a);
    wr(VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(a >> 32));
    a = (uint64_t)(uintptr_t)r->used;
    wr(VMMIO_QUEUE_DEVICE_LOW, (uint32_t)a);
    wr(VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(a >> 32));
    wr(VMMIO_QUEUE_READY, 1);
    for (uint16_t i = 0; i < NQ; i++) {
        r->desc[i].addr = (uint64_t)(uintptr_t)(r->bufs + (uint32_t)i * BUF_BYTES);
        r->desc[i].len = BUF_BYTES;
        r->desc[i].flags = q == 0 ? VIRTQ_DESC_F_WRITE : 0;
        r->desc[i].next = 0;
    }
}

static void rx_post(uint16_t id)
{
    rx.desc[id].len = BUF_BYTES;
    rx.avail->ring[rx.avail_idx % NQ] = id;
    mfence();
    rx.avail_idx++;
    *(volatile uint16_t *)&rx.avail->idx = rx.avail_idx;
}

static const char *init(void)
{
    size_t pos = 0;
    char val[64];
    for (int i = 0; i < 32; i++) {
        uint64_t b;
        uint32_t irq;
        int found = virtio_mmio_from_cmdline(i, &b, &irq);
        if (found <= 0)
            break;
        if (mmio_read32(b + VMMIO_MAGIC) == VIRTIO_MMIO_MAGIC && mmio_read32(b + VMMIO_DEVICE_ID) == VIRTIO_ID_NET) {
            base = b;
            break;
        }
    }
    (void)pos;
    (void)val;
    if (!base)
        return "no virtio-net device among virtio_mmio.device= entries";
    if (rd(VMMIO_VERSION) != 2)
        return "virtio-mmio version is not 2 (QEMU: -global virtio-mmio.force-legacy=false)";
    wr(VMMIO_STATUS, 0);
    for (int i = 0; i < 1000 && rd(VMMIO_STATUS) != 0; i++)
        delay_us(100);
    wr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE);
    wr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER);
    wr(VMMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = rd(VMMIO_DEVICE_FEATURES);
    wr(VMMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rd(VMMIO_DEVICE_FEATURES) << 32;
    if (!(offered & VIRTIO_F_VERSION_1))
        return "device does not offer VIRTIO_F_VERSION_1";
    if (!(offered & VIRTIO_NET_F_MAC))
        return "device does not offer VIRTIO_NET_F_MAC";
    uint64_t want = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC;
    wr(VMMIO_DRIVER_FEATURES_SEL, 0);
    wr(VMMIO_DRIVER_FEATURES, (uint32_t)want);
    wr(VMMIO_DRIVER_FEATURES_SEL, 1);
    wr(VMMIO_DRIVER_FEATURES, (uint32_t)(want >> 32));
    wr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK);
    if (!(rd(VMMIO_STATUS) & VSTAT_FEATURES_OK))
        return "device refused FEATURES_OK";
    for (int i = 0; i < 6; i++)
        mac[i] = mmio_read8(base + VMMIO_CONFIG + (uint32_t)i);
    ring_setup(&rx, 0);
    ring_setup(&tx, 1);
    for (uint16_t i = 0; i < NQ; i++)
        rx_post(i);
    wr(VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK | VSTAT_DRIVER_OK);
    wr(VMMIO_QUEUE_NOTIFY, 0);
    return 0;
}

/* Takes back transmit buffers the device is done with. */
static void tx_reclaim(void) { tx.used_idx = *(volatile uint16_t *)&tx.used->idx; }

/* A free transmit buffer (its frame starts after the header), or 0 when the ring stays
 * full for 100 ms. */
static uint8_t *tx_buf(void)
{
    uint64_t end = 0;
    for (;;) {
        tx_reclaim();
        if ((uint16_t)(tx.avail_idx - tx.used_idx) < NQ)
            break;
        if (!end)
            end = rdtsc() + tsc_ms_to_cycles(100);
        if (rdtsc() > end || (rd(VMMIO_STATUS) & VSTAT_NEEDS_RESET)) {
            tx_full++;
            return 0;
        }
        cpu_relax();
    }
    uint8_t *b = tx.bufs + (uint32_t)(tx.avail_idx % NQ) * BUF_BYTES;
    memset(b, 0, HDR);
    return b + HDR;
}

/* Sends the frame of `len` bytes built in the buffer tx_buf() returned. */
static void tx_send(uint32_t len)
{
    uint16_t id = tx.avail_idx % NQ;
    tx.desc[id].len = HDR + len;
    tx.avail->ring[id] = id;
    mfence();
    tx.avail_idx++;
    *(volatile uint16_t *)&tx.avail->idx = tx.avail_idx;
    mfence();
    wr(VMMIO_QUEUE_NOTIFY, 1);
    tx_sent++;
}

static void eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, mac, 6);
    put16(f + 12, type);
}

static uint16_t csum(const uint8_t *p, uint32_t n, uint32_t sum)
{
    for (; n > 1; p += 2, n -= 2)
        sum += be16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void send_arp(uint16_t op, const uint8_t *dmac, const uint8_t *tmac, const uint8_t *tip)
{
    uint8_t *f = tx_buf();
    if (!f)
        return;
    eth(f, dmac, 0x0806);
    uint8_t *a = f + 14;
    put16(a, 1);
    put16(a + 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, ip, 4);
    memcpy(a + 18, tmac, 6);
    memcpy(a + 24, tip, 4);
    memset(f + 42, 0, 18);
    tx_send(60);
}

static void arp_learn(const uint8_t *pip, const uint8_t *pmac)
{
    int slot = -1;
    for (int i = 0; i < ARP_N; i++) {
        if (arp[i].used && !memcmp(arp[i].ip, pip, 4)) {
            slot = i;
            break;
        }
        if (!arp[i].used && slot < 0)
            slot = i;
    }
    if (slot < 0)
        slot = 0;
    memcpy(arp[slot].ip, pip, 4);
    memcpy(arp[slot].mac, pmac, 6);
    arp[slot].used = 1;
}

static const uint8_t *arp_lookup(const uint8_t *pip)
{
    for (int i = 0; i < ARP_N; i++)
        if (arp[i].used && !memcmp(arp[i].ip, pip, 4))
            return arp[i].mac;
    return 0;
}

/* IPv4 header (20 bytes, no options) at f + 14; payload length n. */
static void ipv4(uint8_t *f, const uint8_t *dst, uint8_t proto, uint32_t n)
{
    uint8_t *h = f + 14;
    h[0] = 0x45;
    h[1] = 0;
    put16(h + 2, (uint16_t)(20 + n));
    put16(h + 4, 0);
    put16(h + 6, 0x4000); /* DF */
    h[8] = 64;
    h[9] = proto;
    put16(h + 10, 0);
    memcpy(h + 12, ip, 4);
    memcpy(h + 16, dst, 4);
    put16(h + 10, csum(h, 20, 0));
}

static void print_ip(const char *what, const uint8_t *a) { printf("%s%u.%u.%u.%u", what, a[0], a[1], a[2], a[3]); }

/* UDP sink state and ping state. */
static uint64_t sink_packets, sink_bytes, sink_first;
static uint8_t ping_ip[4];
static uint64_t ping_count, ping_sent, ping_got, ping_next;

static void handle_udp(const uint8_t *f, uint32_t len, const uint8_t *iph)
{
    const uint8_t *u = iph + 20;
    uint16_t sport = be16(u), dport = be16(u + 2), ulen = be16(u + 4);
    if (ulen < 8 || (uint32_t)(u - f) + ulen > len)
        return;
    const uint8_t *payload = u + 8;
    uint32_t plen = ulen - 8u;
    if (dport == sink_port) {
        if (plen >= 3 && !memcmp(payload, "END", 3)) {
            uint64_t us = sink_first ? tsc_cycles_to_us(rdtsc() - sink_first) : 0;
            printf("NET-SINK packets=%lu bytes=%lu us=%lu\n", sink_packets, sink_bytes, us);
            sink_packets = sink_bytes = sink_first = 0;
            return;
        }
        if (!sink_first)
            sink_first = rdtsc();
        sink_packets++;
        sink_bytes += plen;
        return;
    }
    if (!quiet) {
        print_ip("NET-RX udp from ", iph + 12);
        printf(":%u to port %u len %u\n", sport, dport, plen);
    }
    if (dport != echo_port)
        return;
    uint8_t *o = tx_buf();
    if (!o)
        return;
    eth(o, f + 6, 0x0800);
    ipv4(o, iph + 12, 17, ulen);
    uint8_t *ou = o + 34;
    put16(ou, dport);
    put16(ou + 2, sport);
    put16(ou + 4, ulen);
    put16(ou + 6, 0); /* no checksum (allowed for IPv4) */
    memcpy(ou + 8, payload, plen);
    tx_send(34 + ulen < 60 ? 60 : 34 + ulen);
}

static void handle_icmp(const uint8_t *f, uint32_t len, const uint8_t *iph, uint32_t iplen)
{
    const uint8_t *c = iph + 20;
    uint32_t n = iplen - 20;
    if (n < 8 || (uint32_t)(c - f) + n > len)
        return;
    uint16_t seq = be16(c + 6);
    if (c[0] == 0) { /* echo reply */
        if (!memcmp(iph + 12, ping_ip, 4)) {
            ping_got++;
            print_ip("NET-PING-REPLY from ", iph + 12);
            printf(" seq=%u\n", seq);
        }
        return;
    }
    if (c[0] != 8)
        return;
    if (!quiet) {
        print_ip("NET-RX icmp echo from ", iph + 12);
        printf(" seq=%u\n", seq);
    }
    uint8_t *o = tx_buf();
    if (!o || n > FRAME_MAX - 34)
        return;
    eth(o, f + 6, 0x0800);
    ipv4(o, iph + 12, 1, n);
    uint8_t *oc = o + 34;
    memcpy(oc, c, n);
    oc[0] = 0;
    put16(oc + 2, 0);
    put16(oc + 2, csum(oc, n, 0));
    tx_send(34 + n < 60 ? 60 : 34 + n);
}

static void handle(const uint8_t *f, uint32_t len)
{
    if (len < 14)
        return;
    uint16_t type = be16(f + 12);
    if (type == 0x0806 && len >= 42) {
        const uint8_t *a = f + 14;
        uint16_t op = be16(a + 6);
        if (be16(a) != 1 || be16(a + 2) != 0x0800)
            return;
        arp_learn(a + 14, a + 8);
        if (op == 1 && !memcmp(a + 24, ip, 4)) {
            if (!quiet)
                print_ip("NET-RX arp who-has us from ", a + 14), printf("\n");
            send_arp(2, a + 8, a + 8, a + 14);
        }
        return;
    }
    if (type != 0x0800 || len < 34)
        return;
    const uint8_t *h = f + 14;
    if ((h[0] >> 4) != 4 || (h[0] & 15) != 5)
        return;
    uint32_t iplen = be16(h + 2);
    if (iplen < 20 || 14 + iplen > len || memcmp(h + 16, ip, 4))
        return;
    if (h[9] == 1)
        handle_icmp(f, len, h, iplen);
    else if (h[9] == 17)
        handle_udp(f, len, h);
}

/* Drains received frames; returns how many. */
static int poll_rx(void)
{
    int n = 0;
    while (*(volatile uint16_t *)&rx.used->idx != rx.used_idx) {
        barrier();
        struct vq_used_elem *e = &rx.used->ring[rx.used_idx % NQ];
        uint32_t id = e->id, len = e->len;
        rx.used_idx++;
        if (id < NQ && len > HDR && len <= BUF_BYTES)
            handle(rx.bufs + id * BUF_BYTES + HDR, len - HDR);
        rx_post((uint16_t)(id % NQ));
        n++;
    }
    if (n) {
        mfence();
        wr(VMMIO_QUEUE_NOTIFY, 0);
    }
    return n;
}

/* Waits (bounded) until `target` is in the ARP cache, asking every 200 ms. */
static const uint8_t *resolve(const uint8_t *target, uint64_t timeout_ms)
{
    uint64_t end = rdtsc() + tsc_ms_to_cycles(timeout_ms), next = 0;
    const uint8_t *m;
    static const uint8_t zero[6];
    while (!(m = arp_lookup(target))) {
        if (rdtsc() > end)
            return 0;
        if (rdtsc() > next) {
            send_arp(1, bcast, zero, target);
            next = rdtsc() + tsc_ms_to_cycles(200);
        }
        poll_rx();
        cpu_relax();
    }
    return m;
}

static void send_ping(const uint8_t *dmac)
{
    uint8_t *o = tx_buf();
    if (!o)
        return;
    eth(o, dmac, 0x0800);
    ipv4(o, ping_ip, 1, 16);
    uint8_t *c = o + 34;
    memset(c, 0, 16);
    c[0] = 8;
    put16(c + 4, 0x7e57);
    put16(c + 6, (uint16_t)ping_sent);
    memcpy(c + 8, "vinfra!!", 8);
    put16(c + 2, csum(c, 16, 0));
    tx_send(60);
    ping_sent++;
}

/* net.source=<ip>:<port>:<count>:<size>: count UDP datagrams of size bytes, then "END". */
static int run_source(const char *spec)
{
    uint8_t dst[4];
    uint64_t port, count, size;
    const char *p;
    if (!parse_ip(spec, dst, &p) || *p++ != ':' || !parse_u64(p, &port, &p) || *p++ != ':' ||
        !parse_u64(p, &count, &p) || *p++ != ':' || !parse_u64(p, &size, &p) || port > 65535 ||
        size > FRAME_MAX - 42) {
        printf("NET-FAIL bad net.source=%s (want ip:port:count:size, size <= %u)\n", spec, FRAME_MAX - 42);
        return EXIT_BAD_CMDLINE;
    }
    const uint8_t *dmac = resolve(dst, 3000);
    if (!dmac) {
        print_ip("NET-FAIL no ARP answer from ", dst);
        printf("\n");
        return EXIT_CHECK_FAILED;
    }
    uint8_t m[6];
    memcpy(m, dmac, 6);
    uint64_t t0 = rdtsc(), sent = 0;
    for (uint64_t i = 0; i <= count; i++) {
        uint8_t *o = tx_buf();
        if (!o)
            continue;
        uint32_t plen = i == count ? 3 : (uint32_t)size;
        eth(o, m, 0x0800);
        ipv4(o, dst, 17, 8 + plen);
        uint8_t *u = o + 34;
        put16(u, 4000);
        put16(u + 2, (uint16_t)port);
        put16(u + 4, (uint16_t)(8 + plen));
        put16(u + 6, 0);
        /* Payloads are filled once per ring buffer: guest code is slow here, and the
         * buffers are reused in order. */
        if (i == count)
            memcpy(u + 8, "END", 3);
        else if (i < NQ)
            memset(u + 8, 'x', plen);
        tx_send(42 + plen < 60 ? 60 : 42 + plen);
        sent += i < count;
        if ((i & 15) == 0)
            poll_rx();
    }
    uint64_t us = tsc_cycles_to_us(rdtsc() - t0);
    printf("NET-SOURCE sent=%lu size=%lu us=%lu dropped=%lu\n", sent, size, us, tx_full);
    return 0;
}

int guest_main(void)
{
    char val[64];
    const char *p;
    if (!cmdline_get("net.ip", val, sizeof val) || !parse_ip(val, ip, &p) || *p) {
        printf("NET-FAIL net.ip=<a.b.c.d> missing or malformed\n");
        return EXIT_BAD_CMDLINE;
    }
    uint64_t run_ms;
    if (cmdline_u64("net.echo_port", 7, &echo_port) < 0 || cmdline_u64("net.sink_port", 9, &sink_port) < 0 ||
        cmdline_u64("net.quiet", 0, &quiet) < 0 || cmdline_u64("net.run_ms", 0, &run_ms) < 0)
        return EXIT_BAD_CMDLINE;
    const char *why = init();
    if (why) {
        printf("NET-FAIL %s\n", why);
        return EXIT_BAD_HARDWARE;
    }
    printf("NET-READY mac=%02x:%02x:%02x:%02x:%02x:%02x ", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    print_ip("ip=", ip);
    printf("\n");
    send_arp(1, bcast, bcast, ip); /* gratuitous ARP: the switches learn our port */
    uint64_t forge;
    if (cmdline_u64("net.forge", 0, &forge) < 0)
        return EXIT_BAD_CMDLINE;
    if (forge) { /* a broadcast ARP announcement from a MAC that is not ours */
        mac[5] ^= 1;
        send_arp(1, bcast, bcast, ip);
        mac[5] ^= 1;
        printf("NET-FORGED sent=1\n");
    }

    if (cmdline_get("net.source", val, sizeof val)) {
        int rc = run_source(val);
        if (rc)
            return rc;
    }
    const uint8_t *ping_mac = 0;
    uint8_t pm[6];
    if (cmdline_get("net.ping", val, sizeof val)) {
        if (!parse_ip(val, ping_ip, &p) || *p++ != ':' || !parse_u64(p, &ping_count, &p)) {
            printf("NET-FAIL bad net.ping=%s (want ip:count)\n", val);
            return EXIT_BAD_CMDLINE;
        }
        ping_mac = resolve(ping_ip, 2000);
        if (!ping_mac) {
            print_ip("NET-PING no ARP answer from ", ping_ip);
            printf("\n");
            ping_count = 0;
        } else {
            memcpy(pm, ping_mac, 6);
        }
    }
    uint64_t end = run_ms ? rdtsc() + tsc_ms_to_cycles(run_ms) : 0;
    for (;;) {
        poll_rx();
        uint64_t now = rdtsc();
        if (ping_sent < ping_count && now > ping_next) {
            send_ping(pm);
            ping_next = now + tsc_ms_to_cycles(100);
        } else if (ping_count && ping_sent == ping_count && now > ping_next + tsc_ms_to_cycles(400)) {
            printf("NET-PING sent=%lu received=%lu\n", ping_sent, ping_got);
            ping_count = 0;
        }
        if (end && now > end)
            break;
        cpu_relax();
    }
    printf("NET-DONE tx=%lu\n", tx_sent);
    return 0;
}
