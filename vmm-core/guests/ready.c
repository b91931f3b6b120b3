/* ready: prints VINFRA-READY and exits 0 (see ABI.md). Measures boot-to-first-line. */
#include "rt/rt.h"

int guest_main(void)
{
    serial_write("VINFRA-READY\n", 13);
    return EXIT_OK;
}
