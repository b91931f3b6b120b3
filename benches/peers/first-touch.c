// First touch of memory on this machine: why a thin first write's speed depends on what
// ran before it (vmfs/README.md, "Thin first write: where the time went").
//
// Touches MIB MiB of fresh anonymous memory in 64 MiB steps (printing MB/s per step), then
// touches it again. On a VM whose host takes back freed guest memory (virtio-balloon free
// page reporting), the first touch of memory the host took back costs a host page fault:
// the steps drop to a few hundred MB/s. Memory another process freed moments before is
// still backed and runs at guest speed; the second touch is memory bandwidth.
//
//   cc -O2 -o /tmp/first-touch benches/peers/first-touch.c
//   /tmp/first-touch 2048; /tmp/first-touch 2048; sleep 5; /tmp/first-touch 2048
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const size_t step = 64 << 20;
  size_t n = (size_t)(argc > 1 ? atol(argv[1]) : 1024) << 20;
  n = n / step * step;
  char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  double t0 = now();
  for (size_t i = 0; i < n; i += step) {
    double a = now();
    memset(p + i, 1, step);
    printf("%.0f ", step / 1e6 / (now() - a));
  }
  printf("\nfirst touch %.0f MB/s\n", n / 1e6 / (now() - t0));
  t0 = now();
  memset(p, 2, n);
  printf("second touch %.0f MB/s\n", n / 1e6 / (now() - t0));
  return 0;
}
