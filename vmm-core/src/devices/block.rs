//! Block backends for virtio-blk (to be written).
