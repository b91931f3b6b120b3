/* Common runtime of the vinfra test guests: serial, formatting, command line, TSC, exit,
 * memory map. Everything is polled; guest instructions are slow (emulated on nested KVM),
 * so loops here are short and waits are TSC-based. */
#include "rt.h"

#define EXIT_PORT 0xf4
#define HVM_START_MAGIC 0x336ec578u
#define CMDLINE_MAX 2048

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

extern char __image_end[];

static const struct hvm_start_info *start_info;
static char cmdline_buf[CMDLINE_MAX];
static uint64_t tsc_khz_value;
static const char *tsc_source_name = "none";

/* ---------------------------------------------------------------- strings */

void *memset(void *dst, int c, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* ----------------------------------------------------------------- serial */

static void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* IER: no interrupts, we poll */
    outb(COM1 + 3, 0x80); /* LCR: DLAB */
    outb(COM1 + 0, 0x01); /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0x07); /* FCR: enable and clear the 16-byte FIFOs */
    outb(COM1 + 4, 0x03); /* MCR: DTR + RTS, no loopback */
}

/* Waits (bounded) until the transmitter can take a FIFO's worth of bytes. */
static void serial_wait_thr(void)
{
    for (int i = 0; i < 100000; i++) {
        if (inb(COM1 + 5) & LSR_THR_EMPTY)
            return;
        cpu_relax();
    }
}

void serial_write(const char *s, size_t n)
{
    /* THR empty means the whole 16-byte FIFO is free: one LSR read per 16 bytes. */
    while (n > 0) {
        serial_wait_thr();
        size_t chunk = n < 16 ? n : 16;
        for (size_t i = 0; i < chunk; i++)
            outb(COM1, (uint8_t)s[i]);
        s += chunk;
        n -= chunk;
    }
}

void serial_putc(char c) { serial_write(&c, 1); }

/* ------------------------------------------------------------- formatting */

struct out {
    char *buf;
    size_t size;
    size_t len;
};

static void out_c(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_num(struct out *o, uint64_t v, unsigned base, int width, char pad, int neg)
{
    char tmp[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (neg)
        tmp[n++] = '-';
    for (int i = n; i < width; i++)
        out_c(o, pad);
    while (n)
        out_c(o, tmp[--n]);
}

/* Supports %s %c %d %i %u %x %p %%, flags 0 and width, length modifiers l ll z. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_c(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            for (int i = n; i < width; i++)
                out_c(&o, ' ');
            while (*s)
                out_c(&o, *s++);
            break;
        }
        case 'c':
            out_c(&o, (char)va_arg(ap, int));
            break;
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            out_num(&o, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'u':
            out_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad, 0);
            break;
        case 'x':
            out_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad, 0);
            break;
        case 'p':
            out_c(&o, '0');
            out_c(&o, 'x');
            out_num(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, width, pad, 0);
            break;
        case '%':
            out_c(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            out_c(&o, '%');
            out_c(&o, *fmt);
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    serial_write(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    return n;
}

/* ----------------------------------------------------------- command line */

const char *cmdline(void) { return cmdline_buf; }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int cmdline_next(const char *key, size_t *pos, char *out, size_t out_size)
{
    size_t klen = strlen(key);
    const char *s = cmdline_buf;
    size_t i = *pos;
    while (s[i]) {
        while (s[i] && is_space(s[i]))
            i++;
        size_t w = i;
        while (s[i] && !is_space(s[i]))
            i++;
        if (i - w > klen && memcmp(s + w, key, klen) == 0 && s[w + klen] == '=') {
            size_t vlen = i - (w + klen + 1);
            if (out_size) {
                if (vlen > out_size - 1)
                    vlen = out_size - 1;
                memcpy(out, s + w + klen + 1, vlen);
                out[vlen] = 0;
            }
            *pos = i;
            return 1;
        }
    }
    *pos = i;
    return 0;
}

int cmdline_get(const char *key, char *out, size_t out_size)
{
    size_t pos = 0;
    int found = 0;
    while (cmdline_next(key, &pos, out, out_size))
        found = 1;
    return found;
}

int parse_u64(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    unsigned base = 10;
    int digits = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            break;
        if (v > (UINT64_MAX - d) / base)
            return 0; /* overflow */
        v = v * base + d;
        digits++;
    }
    if (end)
        *end = s;
    *out = v;
    return digits > 0;
}

int cmdline_u64(const char *key, uint64_t def, uint64_t *out)
{
    char val[32];
    const char *end;
    if (!cmdline_get(key, val, sizeof val)) {
        *out = def;
        return 0;
    }
    if (!parse_u64(val, out, &end) || *end) {
        printf("bad command line: %s=%s is not a number\n", key, val);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- timing */

#define PIT_HZ 1193182u
#define PIT_CAL_COUNT 11932u /* 10 ms */
#define MIN_TSC_KHZ 100000u  /* results below 100 MHz are treated as a broken source */

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

/* KVM's paravirtual clock page: the host fills in the TSC-to-nanoseconds scale. */
struct pvclock_time_info {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad[2];
} __attribute__((packed));

static struct pvclock_time_info pvclock __attribute__((aligned(64)));

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

/* Asks KVM (not the VMM: KVM answers this MSR itself) for the TSC scale, then turns the
 * clock page off again so the host stops writing guest memory (dirty-log tests). */
static uint64_t kvmclock_tsc_khz(void)
{
    uint32_t a, b, c, d;
    cpuid(0x40000000u, &a, &b, &c, &d);
    if (b != 0x4b4d564bu || c != 0x564b4d56u || d != 0x4du) /* "KVMKVMKVM\0\0\0" */
        return 0;
    cpuid(0x40000001u, &a, &b, &c, &d);
    if (!(a & KVM_FEATURE_CLOCKSOURCE2))
        return 0;
    memset(&pvclock, 0, sizeof pvclock);
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)(uintptr_t)&pvclock | 1);
    uint64_t khz = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t v = *(volatile uint32_t *)&pvclock.version;
        barrier();
        uint32_t mul = pvclock.tsc_to_system_mul;
        int8_t shift = pvclock.tsc_shift;
        barrier();
        if (v && !(v & 1) && *(volatile uint32_t *)&pvclock.version == v && mul) {
            khz = (1000000ull << 32) / mul;
            khz = shift < 0 ? khz << -shift : khz >> shift;
            break;
        }
        cpu_relax();
    }
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0);
    return khz;
}

static uint64_t calibrate_pit(void)
{
    uint8_t p61 = inb(0x61);
    outb(0x61, (uint8_t)((p61 & ~0x02) | 0x01)); /* gate channel 2 on, speaker off */
    outb(0x43, 0xb0);                             /* channel 2, lo/hi, mode 0 */
    outb(0x42, PIT_CAL_COUNT & 0xff);
    outb(0x42, PIT_CAL_COUNT >> 8);
    uint64_t t0 = rdtsc();
    uint64_t khz = 0;
    /* OUT already high right after loading the count: no working speaker port / PIT. */
    if (!(inb(0x61) & 0x20)) {
        /* Each inb is a VM exit (tens of microseconds): 100000 polls bound this. */
        for (int i = 0; i < 100000; i++) {
            if (inb(0x61) & 0x20) {
                khz = (rdtsc() - t0) * PIT_HZ / PIT_CAL_COUNT / 1000;
                break;
            }
        }
    }
    outb(0x61, p61);
    return khz >= MIN_TSC_KHZ ? khz : 0;
}

static uint64_t cpuid_tsc_khz(void)
{
    uint32_t a, b, c, d;
    cpuid(0x40000000u, &a, &b, &c, &d);
    if (a >= 0x40000010u) { /* hypervisor timing leaf: eax = TSC kHz */
        cpuid(0x40000010u, &a, &b, &c, &d);
        if (a)
            return a;
    }
    cpuid(0, &a, &b, &c, &d);
    if (a >= 0x15) {
        cpuid(0x15u, &a, &b, &c, &d);
        if (a && b && c)
            return (uint64_t)c * b / a / 1000;
    }
    return 0;
}

uint64_t tsc_khz(void)
{
    if (tsc_khz_value)
        return tsc_khz_value;
    uint64_t k = 0;
    if (cmdline_u64("vinfra.tsc_khz", 0, &k) == 0 && k) {
        tsc_source_name = "cmdline";
    } else if ((k = kvmclock_tsc_khz()) != 0) {
        tsc_source_name = "kvmclock";
    } else if ((k = calibrate_pit()) != 0) {
        tsc_source_name = "pit";
    } else if ((k = cpuid_tsc_khz()) != 0) {
        tsc_source_name = "cpuid";
    } else {
        k = 2000000;
        tsc_source_name = "guess";
    }
    tsc_khz_value = k;
    return k;
}

const char *tsc_source(void)
{
    tsc_khz();
    return tsc_source_name;
}

uint64_t tsc_ms_to_cycles(uint64_t ms) { return ms * tsc_khz(); }

uint64_t tsc_cycles_to_us(uint64_t cycles) { return cycles * 1000 / tsc_khz(); }

void delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz() / 1000;
    while (rdtsc() < end)
        cpu_relax();
}

/* ------------------------------------------------------------------- exit */

void guest_exit(uint8_t code)
{
    outb(EXIT_PORT, code);
    /* A VMM without the exit device: fall back to a reset, then stop. */
    outb(0x64, 0xfe);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void i8042_reset(void)
{
    outb(0x64, 0xfe);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ------------------------------------------------------------- memory map */

size_t memmap_count(void)
{
    if (!start_info || start_info->version < 1 || !start_info->memmap_paddr)
        return 0;
    return start_info->memmap_entries;
}

const struct memmap_entry *memmap_get(size_t i)
{
    return (const struct memmap_entry *)(uintptr_t)start_info->memmap_paddr + i;
}

uint64_t ram_end_from(uint64_t addr)
{
    for (size_t i = 0; i < memmap_count(); i++) {
        const struct memmap_entry *e = memmap_get(i);
        if (e->type == MEMMAP_RAM && addr >= e->addr && addr < e->addr + e->size)
            return e->addr + e->size;
    }
    return 0;
}

uint64_t ram_top(void)
{
    uint64_t top = 0;
    for (size_t i = 0; i < memmap_count(); i++) {
        const struct memmap_entry *e = memmap_get(i);
        if (e->type == MEMMAP_RAM && e->addr + e->size > top)
            top = e->addr + e->size;
    }
    return top;
}

uint64_t image_end(void) { return ((uint64_t)(uintptr_t)__image_end + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1); }

/* ------------------------------------------------------------------- main */

__attribute__((noreturn)) void rt_main(const struct hvm_start_info *si);

void rt_main(const struct hvm_start_info *si)
{
    serial_init();
    if (!si || si->magic != HVM_START_MAGIC) {
        printf("bad hvm_start_info at %p (magic %x)\n", (const void *)si, si ? si->magic : 0);
        guest_exit(EXIT_BAD_HARDWARE);
    }
    start_info = si;
    if (si->cmdline_paddr) {
        const char *c = (const char *)(uintptr_t)si->cmdline_paddr;
        size_t n = 0;
        while (n < CMDLINE_MAX - 1 && c[n]) {
            cmdline_buf[n] = c[n];
            n++;
        }
        cmdline_buf[n] = 0;
    }
    char dbg[4];
    if (cmdline_get("vinfra.debug", dbg, sizeof dbg) && dbg[0] == '1') {
        printf("vinfra-guest: start_info v%u cmdline=\"%s\"\n", si->version, cmdline_buf);
        for (size_t i = 0; i < memmap_count(); i++) {
            const struct memmap_entry *e = memmap_get(i);
            printf("vinfra-guest: memmap %lx-%lx type %u\n", e->addr, e->addr + e->size, e->type);
        }
        printf("vinfra-guest: image end %lx\n", image_end());
    }
    guest_exit((uint8_t)guest_main());
}
