/* Common runtime of the vinfra test guests: no libc, polled devices only (see ABI.md). */
#ifndef VINFRA_RT_H
#define VINFRA_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define EXIT_OK 0
#define EXIT_CHECK_FAILED 1
#define EXIT_BAD_CMDLINE 2
#define EXIT_BAD_HARDWARE 3

#define PAGE_SIZE 4096u
#define MIB (1024u * 1024u)

/* Each guest defines this; its return value is the exit code. */
int guest_main(void);

/* ---- port and MMIO access ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t *)(uintptr_t)addr; }
static inline void mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t *)(uintptr_t)addr = v; }
static inline uint8_t mmio_read8(uint64_t addr) { return *(volatile uint8_t *)(uintptr_t)addr; }
static inline void mmio_write8(uint64_t addr, uint8_t v) { *(volatile uint8_t *)(uintptr_t)addr = v; }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mfence(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* ---- string helpers (gcc may also emit calls to these) ---- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* ---- serial console (COM1, polled) ---- */
#define COM1 0x3f8
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20
void serial_putc(char c);
void serial_write(const char *s, size_t n);
/* Returns the next received byte, or -1 when none is waiting (one LSR read). Inline:
 * guest code is emulated on nested KVM, and a call costs microseconds per byte. */
static inline int serial_getc(void)
{
    if (inb(COM1 + 5) & LSR_DATA_READY)
        return inb(COM1);
    return -1;
}
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- command line ---- */
/* The raw command line ("" when the VMM gave none). */
const char *cmdline(void);
/* Finds the LAST `key=value` word; copies value (NUL-terminated, truncated) and returns 1. */
int cmdline_get(const char *key, char *out, size_t out_size);
/* Iterates over every value of a repeated key: *pos starts at 0. Returns 0 at the end. */
int cmdline_next(const char *key, size_t *pos, char *out, size_t out_size);
/* Parses an unsigned number (decimal, or hex with 0x). Returns 0 on a bad or empty string;
 * *end (if not NULL) gets the first unparsed character. */
int parse_u64(const char *s, uint64_t *out, const char **end);
/* u64 value of key, def when absent; returns -1 (and prints why) on a malformed value. */
int cmdline_u64(const char *key, uint64_t def, uint64_t *out);

/* ---- timing ---- */
/* TSC frequency: vinfra.tsc_khz, else KVM's pvclock scale, else PIT channel 2 calibration,
 * else CPUID, else a guess.
 * Calibrates once (about 10 ms) on first use. */
uint64_t tsc_khz(void);
const char *tsc_source(void);
uint64_t tsc_ms_to_cycles(uint64_t ms);
uint64_t tsc_cycles_to_us(uint64_t cycles);
void delay_us(uint64_t us);

/* ---- exit ---- */
__attribute__((noreturn)) void guest_exit(uint8_t code);
__attribute__((noreturn)) void i8042_reset(void);

/* ---- memory map ---- */
#define MEMMAP_RAM 1
struct memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
size_t memmap_count(void);
const struct memmap_entry *memmap_get(size_t i);
/* End of the RAM region that contains addr (0 when addr is not in RAM). */
uint64_t ram_end_from(uint64_t addr);
/* Highest end address of any RAM region. */
uint64_t ram_top(void);
/* First address after the guest image (page aligned). */
uint64_t image_end(void);

#endif
