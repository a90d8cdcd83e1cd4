// Numbers from the virtio block device specification (virtio 1.x, 5.2).

export const VIRTIO_ID_BLOCK = 2;

export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
} as const;

/** `type` of struct virtio_blk_req. */
export const RequestType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
} as const;

/** The status byte the device writes last. */
export const BlkStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
} as const;
export type BlkStatus = (typeof BlkStatus)[keyof typeof BlkStatus];

/** struct virtio_blk_outhdr: type u32, reserved u32, sector u64. */
export const REQUEST_HEADER_BYTES = 16;
export const ID_BYTES = 20;

/** Offsets in struct virtio_blk_config. */
export const BlkConfig = {
  CAPACITY: 0, // u64, in 512-byte sectors
  SIZE_MAX: 8, // u32
  SEG_MAX: 12, // u32
  BLK_SIZE: 20, // u32
  /** Up to and including blk_size and the topology fields after it. */
  SIZE: 32,
} as const;
