/* workload: keeps N MiB, dirties them at R MiB/s, heartbeats, obeys serial commands
 * (see ABI.md), and with a virtio-blk device writes and reads sectors on command.
 * Everything is polled and TSC-paced: guest instructions are slow. */
#include "rt/virtio.h"

#define BUF_START (2u * MIB) /* first 2 MiB hold the image, tables and stack */
#define BATCH_PAGES 256       /* most pages dirtied per pass of the main loop */
#define CLOCK_CHECK_PAGES 16  /* pages dirtied between two looks at the TSC */
#define SERIAL_POLL_US 50     /* most time between two serial polls while dirtying */
#define IDLE_POLL_US 50       /* pause between serial polls when there is nothing to do */
#define MAX_RATE 100000       /* MiB/s; keeps the pacing arithmetic in 64 bits */
/* Longest wait for one disk request. Our VMM completes a request inside the notify, so
 * only a broken device waits this long, and then one heartbeat is skipped, not burst. */
#define DISK_TIMEOUT_MS 1000
#define SECTOR_WORDS 128
/* The VMM's ACPI power device (ABI.md): sleep control, sleep status, GED event status,
 * signature. Unassigned ports read 0xff (QEMU microvm, or a VMM without it) and a PC's VGA
 * decodes these ports, so the button counts only where the signature reads 'V'. */
#define ACPI_SLEEP_CONTROL 0x3c0
#define ACPI_GED_STATUS 0x3c2
#define ACPI_SIGNATURE 0x3c3
#define GED_POWER_BUTTON 0x01
#define SLP_TYP_S5 (5u << 2)
#define SLP_EN (1u << 5)
#define BUTTON_POLL_MS 10 /* most time between two looks at the power button */

/* State lives in guest memory so it survives snapshot/restore and migration. */
static uint64_t heartbeat;
static uint64_t rate_mib;
static uint64_t npages;
static uint64_t cursor;
static uint64_t generation;
static uint64_t dirtied; /* pages written by the rate loop, shown with vinfra.debug=1 */
static int debug;
static char line[80];
static uint32_t line_len;
static int line_overflow;
static uint64_t poll_cycles; /* SERIAL_POLL_US in TSC cycles */
static uint64_t next_poll;   /* TSC value from which the dirtying loop polls the serial port */
static int have_power_button;
static uint64_t button_cycles; /* BUTTON_POLL_MS in TSC cycles */
static uint64_t next_button;
/* The disk: driver state in .bss and the sector buffer in .noinit, both guest memory, so a
 * snapshot or a migration carries them (the device's queue state travels with the VMM). */
static struct virtio_dev dev;
static uint64_t disk_base;
static int have_disk;
static uint32_t sector_buf[SECTOR_WORDS] __attribute__((aligned(512), section(".noinit.sector")));

static volatile uint64_t *page(uint64_t i) { return (volatile uint64_t *)(uintptr_t)(BUF_START + i * PAGE_SIZE); }

static const char *skip_spaces(const char *s)
{
    while (*s == ' ')
        s++;
    return s;
}

/* Parses one number followed by a space or the end. */
static int arg(const char **s, uint64_t *v)
{
    const char *end;
    *s = skip_spaces(*s);
    if (!parse_u64(*s, v, &end) || (*end && *end != ' '))
        return 0;
    *s = end;
    return 1;
}

/* Answers `PONG <n>` without printf: guest code runs emulated on nested KVM (about 1 us
 * per instruction), and the downtime probe of live migration times this answer. */
static void pong(uint64_t n)
{
    char buf[32] = "PONG ";
    char digits[20];
    uint32_t len = 5, nd = 0;
    do {
        digits[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (nd)
        buf[len++] = digits[--nd];
    buf[len++] = '\n';
    serial_write(buf, len);
}

/* Sets the device up (again); on failure prints `ERR disk <why>` and drops the disk. */
static void disk_init(void)
{
    const char *why;
    have_disk = virtio_blk_init(&dev, disk_base, &why) == 0;
    if (!have_disk)
        printf("ERR disk virtio-mmio at 0x%lx: %s\n", disk_base, why);
}

/* One request; on an error answers `ERR <cmd> [flush ]<why>` and returns 0. A request the
 * device did not finish may still be in flight, so then the device is reset and set up
 * again before the next command uses its queue. */
static int disk_io(const char *cmd, uint32_t type, uint64_t sector, uint32_t len)
{
    int r = blk_request(&dev, type, sector, len ? sector_buf : 0, len, DISK_TIMEOUT_MS);
    if (r == VIRTIO_BLK_S_OK)
        return 1;
    const char *flush = type == VIRTIO_BLK_T_FLUSH ? "flush " : "";
    if (r == VQ_TIMEOUT || r == VQ_NEEDS_RESET) {
        printf("ERR %s %s%s\n", cmd, flush, r == VQ_TIMEOUT ? "timeout" : "needs reset");
        disk_init();
    } else {
        printf("ERR %s %sstatus %d\n", cmd, flush, r);
    }
    return 0;
}

static void dwrite(uint64_t sector, uint32_t value)
{
    if (dev.features & VIRTIO_BLK_F_RO) {
        printf("ERR dwrite read-only disk\n");
        return;
    }
    for (uint32_t j = 0; j < SECTOR_WORDS; j++)
        sector_buf[j] = value;
    if (!disk_io("dwrite", VIRTIO_BLK_T_OUT, sector, sizeof sector_buf))
        return;
    if ((dev.features & VIRTIO_BLK_F_FLUSH) && !disk_io("dwrite", VIRTIO_BLK_T_FLUSH, 0, 0))
        return;
    printf("DWROTE %lu %u\n", sector, value);
}

static void dread(uint64_t sector)
{
    /* A poison that is not all one value: a device that answers OK without writing the
     * buffer shows `mixed`, not what an earlier command left there (the buffer migrates). */
    for (uint32_t j = 0; j < SECTOR_WORDS; j++)
        sector_buf[j] = 0xdeadbeefu ^ j;
    if (!disk_io("dread", VIRTIO_BLK_T_IN, sector, sizeof sector_buf))
        return;
    for (uint32_t j = 1; j < SECTOR_WORDS; j++)
        if (sector_buf[j] != sector_buf[0]) {
            printf("DREAD %lu mixed\n", sector);
            return;
        }
    printf("DREAD %lu %u\n", sector, sector_buf[0]);
}

static void command(const char *l)
{
    uint64_t a, b;
    l = skip_spaces(l);
    if (!*l)
        return;
    /* ping first, compared inline: it is the command whose latency matters. */
    if (l[0] == 'p' && l[1] == 'i' && l[2] == 'n' && l[3] == 'g' && (l[4] == ' ' || !l[4])) {
        l += 4;
        if (!arg(&l, &a) || *skip_spaces(l)) {
            printf("ERR usage: ping <n>\n");
            return;
        }
        pong(a);
    } else if (memcmp(l, "rate", 4) == 0 && (l[4] == ' ' || !l[4])) {
        l += 4;
        if (!arg(&l, &a) || *skip_spaces(l) || a > MAX_RATE) {
            printf("ERR usage: rate <MiB/s up to %u>\n", MAX_RATE);
            return;
        }
        rate_mib = a;
        printf("OK rate %lu\n", a);
    } else if (memcmp(l, "touch", 5) == 0 && (l[5] == ' ' || !l[5])) {
        l += 5;
        if (!arg(&l, &a) || !arg(&l, &b) || *skip_spaces(l) || a > npages || b > npages - a) {
            printf("ERR usage: touch <first> <count> within %lu pages\n", npages);
            return;
        }
        generation++;
        for (uint64_t i = 0; i < b; i++)
            *page(a + i) = generation;
        printf("TOUCHED 0x%lx %lu\n", (uint64_t)(uintptr_t)page(a), b);
    } else if (memcmp(l, "dwrite", 6) == 0 && (l[6] == ' ' || !l[6])) {
        l += 6;
        if (!have_disk) {
            printf("ERR no disk\n");
            return;
        }
        if (!arg(&l, &a) || !arg(&l, &b) || *skip_spaces(l) || a >= dev.capacity || b > 0xffffffffu) {
            printf("ERR usage: dwrite <sector> <u32 value> within %lu sectors\n", dev.capacity);
            return;
        }
        dwrite(a, (uint32_t)b);
    } else if (memcmp(l, "dread", 5) == 0 && (l[5] == ' ' || !l[5])) {
        l += 5;
        if (!have_disk) {
            printf("ERR no disk\n");
            return;
        }
        if (!arg(&l, &a) || *skip_spaces(l) || a >= dev.capacity) {
            printf("ERR usage: dread <sector> within %lu sectors\n", dev.capacity);
            return;
        }
        dread(a);
    } else if (memcmp(l, "exit", 4) == 0 && (l[4] == ' ' || !l[4])) {
        l += 4;
        if (!arg(&l, &a) || *skip_spaces(l) || a > 255) {
            printf("ERR usage: exit <0..255>\n");
            return;
        }
        guest_exit((uint8_t)a);
    } else if (memcmp(l, "reboot", 6) == 0 && !*skip_spaces(l + 6)) {
        i8042_reset();
    } else {
        printf("ERR unknown command: %s\n", l);
    }
}

/* The ACPI power button (the host's graceful shutdown): acknowledges the press, says
 * SHUTDOWN and powers off through the ACPI sleep control register (S5), as an ACPI OS
 * does; should that not end the VM, through the exit device. */
static void poll_power_button(uint64_t now)
{
    if (!have_power_button || now < next_button)
        return;
    next_button = now + button_cycles;
    if (!(inb(ACPI_GED_STATUS) & GED_POWER_BUTTON))
        return;
    outb(ACPI_GED_STATUS, GED_POWER_BUTTON);
    serial_write("SHUTDOWN\n", 9);
    outb(ACPI_SLEEP_CONTROL, (uint8_t)(SLP_TYP_S5 | SLP_EN));
    guest_exit(0);
}

static void poll_serial(void)
{
    /* Drain what is waiting, bounded so a flood cannot starve the heartbeat. */
    for (int i = 0; i < 64; i++) {
        int c = serial_getc();
        if (c < 0)
            return;
        if (c == '\n' || c == '\r') {
            line[line_len] = 0;
            if (line_overflow)
                printf("ERR line too long\n");
            else
                command(line);
            line_len = 0;
            line_overflow = 0;
        } else if (line_len + 1 < sizeof line) {
            line[line_len++] = (char)c;
        } else {
            line_overflow = 1;
        }
    }
}

int guest_main(void)
{
    uint64_t mib;
    if (cmdline_u64("workload.mib", 16, &mib) < 0 || cmdline_u64("workload.rate", 0, &rate_mib) < 0)
        return EXIT_BAD_CMDLINE;
    if (mib == 0 || rate_mib > MAX_RATE) {
        printf("bad command line: workload.mib must be >= 1, workload.rate <= %u\n", MAX_RATE);
        return EXIT_BAD_CMDLINE;
    }
    uint64_t end = ram_end_from(BUF_START);
    if (mib > 4096 || BUF_START + mib * MIB > end || BUF_START + mib * MIB > 0x100000000ull) {
        printf("workload: %lu MiB do not fit in RAM from 0x%x (RAM there ends at 0x%lx); give the VM "
               "more memory\n",
               mib, BUF_START, end);
        return EXIT_BAD_CMDLINE;
    }
    npages = mib * (MIB / PAGE_SIZE);
    char dbg[4];
    debug = cmdline_get("vinfra.debug", dbg, sizeof dbg) && dbg[0] == '1';
    uint64_t hz = tsc_khz() * 1000;
    poll_cycles = SERIAL_POLL_US * hz / 1000000;
    button_cycles = BUTTON_POLL_MS * hz / 1000;
    have_power_button = inb(ACPI_SIGNATURE) == 'V';
    uint32_t irq;
    int found = virtio_mmio_from_cmdline(0, &disk_base, &irq);
    if (found < 0)
        return EXIT_BAD_CMDLINE;
    if (found)
        disk_init();

    /* Touch every page once: one write per 4 KiB page. */
    generation = 1;
    for (uint64_t i = 0; i < npages; i++)
        *page(i) = generation;
    serial_write("VINFRA-READY\n", 13);

    uint64_t last = rdtsc();
    uint64_t next_hb = last + hz;
    uint64_t credit = 0; /* pages owed, times hz */
    for (;;) {
        uint64_t now = rdtsc();
        if (now < last) /* TSC went back (restored elsewhere): resynchronise */
            next_hb = now + hz;
        uint64_t delta = now > last ? now - last : 0;
        if (delta > hz) /* paused (snapshot, migration): do not burst to catch up */
            delta = hz;
        last = now;

        int busy = 0;
        if (rate_mib) {
            uint64_t pps = rate_mib * (MIB / PAGE_SIZE);
            credit += delta * pps;
            if (credit > pps * hz) /* owe at most one second */
                credit = pps * hz;
            uint64_t n = credit / hz;
            if (n > BATCH_PAGES)
                n = BATCH_PAGES;
            credit -= n * hz;
            /* A batch takes ~2 ms where guest code is emulated: poll the serial port
             * within it, by the clock, so a command waits at most ~SERIAL_POLL_US whatever
             * the rate (and where an exit costs more than many pages, as on hardware KVM,
             * the polls stay rare). */
            for (uint64_t left = n; left;) {
                uint64_t chunk = left < CLOCK_CHECK_PAGES ? left : CLOCK_CHECK_PAGES;
                left -= chunk;
                dirtied += chunk;
                for (uint64_t i = 0; i < chunk; i++) {
                    *page(cursor) = generation;
                    if (++cursor == npages) {
                        cursor = 0;
                        generation++;
                    }
                }
                uint64_t t = rdtsc();
                if (t >= next_poll) {
                    poll_serial();
                    next_poll = t + poll_cycles;
                }
            }
            busy = n > 0;
        }
        if (now >= next_hb) {
            heartbeat++;
            if (debug)
                printf("HB %lu dirtied_pages=%lu\n", heartbeat, dirtied);
            else
                printf("HB %lu\n", heartbeat);
            next_hb += hz;
            if (now >= next_hb) /* late by more than a beat: skip, do not burst */
                next_hb = now + hz;
        }
        poll_serial();
        next_poll = rdtsc() + poll_cycles;
        poll_power_button(now);
        if (!busy) {
            uint64_t until = now + IDLE_POLL_US * hz / 1000000;
            while (rdtsc() < until)
                cpu_relax();
        }
    }
}
