// The two sizes everything is counted in, defined once: a guest page (what the memory model
// tracks and a sync sends) and a disk sector (what block requests and the I/O log address).

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

export const SECTOR_SHIFT = 9;
export const SECTOR_SIZE = 1 << SECTOR_SHIFT;

/** Sectors in a page. */
export const SECTORS_PER_PAGE = PAGE_SIZE / SECTOR_SIZE;
