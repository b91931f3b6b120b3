/* Minimal modern (version 2) virtio-mmio split-virtqueue driver for virtio-blk, polled. */
#ifndef VINFRA_VIRTIO_H
#define VINFRA_VIRTIO_H

#include "rt.h"

#define VIRTIO_MMIO_MAGIC 0x74726976u
#define VIRTIO_ID_BLOCK 2

/* Registers (virtio 1.x, section 4.2.2). */
#define VMMIO_MAGIC 0x000
#define VMMIO_VERSION 0x004
#define VMMIO_DEVICE_ID 0x008
#define VMMIO_DEVICE_FEATURES 0x010
#define VMMIO_DEVICE_FEATURES_SEL 0x014
#define VMMIO_DRIVER_FEATURES 0x020
#define VMMIO_DRIVER_FEATURES_SEL 0x024
#define VMMIO_QUEUE_SEL 0x030
#define VMMIO_QUEUE_NUM_MAX 0x034
#define VMMIO_QUEUE_NUM 0x038
#define VMMIO_QUEUE_READY 0x044
#define VMMIO_QUEUE_NOTIFY 0x050
#define VMMIO_INTERRUPT_STATUS 0x060
#define VMMIO_INTERRUPT_ACK 0x064
#define VMMIO_STATUS 0x070
#define VMMIO_QUEUE_DESC_LOW 0x080
#define VMMIO_QUEUE_DESC_HIGH 0x084
#define VMMIO_QUEUE_DRIVER_LOW 0x090
#define VMMIO_QUEUE_DRIVER_HIGH 0x094
#define VMMIO_QUEUE_DEVICE_LOW 0x0a0
#define VMMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VMMIO_CONFIG_GENERATION 0x0fc
#define VMMIO_CONFIG 0x100

#define VSTAT_ACKNOWLEDGE 1
#define VSTAT_DRIVER 2
#define VSTAT_DRIVER_OK 4
#define VSTAT_FEATURES_OK 8
#define VSTAT_NEEDS_RESET 0x40
#define VSTAT_FAILED 0x80

#define VIRTIO_F_VERSION_1 (1ull << 32)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VQ_MAX 16

struct vq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[VQ_MAX];
    uint16_t used_event;
};

struct vq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct vq_used {
    uint16_t flags;
    uint16_t idx;
    struct vq_used_elem ring[VQ_MAX];
    uint16_t avail_event;
};

struct blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct virtio_dev {
    uint64_t base;
    uint32_t irq;
    uint64_t features; /* negotiated */
    uint64_t capacity; /* 512-byte sectors */
    uint16_t qsize;
    uint16_t avail_idx; /* next free avail slot (free-running) */
    uint16_t used_idx;  /* last used index consumed (free-running) */
    struct vq_desc *desc;
    struct vq_avail *avail;
    struct vq_used *used;
    struct blk_req_hdr *hdr; /* scratch request header ... */
    volatile uint8_t *status; /* ... and status byte, both in guest RAM */
};

/* Result of waiting for the device. */
#define VQ_DONE 0
#define VQ_TIMEOUT (-1)
#define VQ_NEEDS_RESET (-2)

/* The index-th `virtio_mmio.device=<size>@<base>:<irq>` on the command line.
 * Returns 1 and fills base/irq; 0 when there is no such entry; -1 (printing why) when the
 * entry is malformed. */
int virtio_mmio_from_cmdline(int index, uint64_t *base, uint32_t *irq);

/* Resets the device, checks magic/version/id, negotiates VERSION_1 (+ FLUSH when offered),
 * sets up queue 0 and sets DRIVER_OK. Returns 0, or an exit code with *why set. */
int virtio_blk_init(struct virtio_dev *d, uint64_t base, const char **why);

/* Writes 0 to the status register and waits (bounded) until it reads back 0. */
int virtio_reset(struct virtio_dev *d);

/* Puts a chain head into the avail ring and notifies queue 0. */
void virtq_post(struct virtio_dev *d, uint16_t head);

/* Polls the used ring until the next element arrives, the device needs a reset, or
 * timeout_ms passes. id and len get the used element. */
int virtq_wait(struct virtio_dev *d, uint64_t timeout_ms, uint32_t *id, uint32_t *len);

/* One block request (header, optional data, status) as descriptors 0..2. Returns the
 * virtio-blk status byte (>= 0) or VQ_TIMEOUT / VQ_NEEDS_RESET. */
int blk_request(struct virtio_dev *d, uint32_t type, uint64_t sector, void *buf, uint32_t len,
                uint64_t timeout_ms);

#endif
