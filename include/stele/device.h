/*
 * device.h — libstele-device: what firmware embeds to act as a Stele device (SPEC §6).
 * No allocation after init; storage through callbacks the firmware provides. Frames are
 * built and sealed with stele/frame.h.
 *
 * Counters that never repeat across power loss: a frame's counter is what makes a replay
 * detectable, so a device that reused one after a power cut would have its fresh data
 * refused as a duplicate — or worse, a recorded frame accepted in its place. The
 * counter store reserves a block of counters ahead, makes the reservation durable
 * (checksummed, versioned, in two alternating slots so a torn write leaves the other
 * intact) before handing out any counter of it, and on boot skips past the last durable
 * reservation. A power cut costs at most one block of unused counters.
 */
#ifndef STELE_DEVICE_H
#define STELE_DEVICE_H

#include <stddef.h>
#include <stdint.h>

/* Two storage slots of STELE_COUNTER_RECORD_BYTES each (flash pages, files...). */
#define STELE_COUNTER_RECORD_BYTES 40
typedef struct {
    /* Reads slot 0 or 1 into buf (exactly len bytes): 0, or negative when missing or
     * unreadable (the slot is then treated as empty). */
    int (*read)(void *ctx, int slot, uint8_t *buf, size_t len);
    /* Writes the slot and makes it durable; 0 only once it is (never report a write
     * that may not survive power loss as done). */
    int (*write)(void *ctx, int slot, const uint8_t *buf, size_t len);
    void *ctx;
} stele_counter_storage;

typedef struct {
    stele_counter_storage storage;
    uint64_t next;           /* the next counter to hand out */
    uint64_t reserved_until; /* counters below this are covered by a durable record */
    uint64_t generation;     /* of the newest durable record */
    uint32_t block;          /* counters reserved per record write */
    int slot;                /* slot of the newest durable record, -1 if none */
} stele_counter;

/* Loads the newest valid record (or starts at 1 when both slots are empty) and skips
 * past its reservation. block: counters per reservation (0 = 1024). No counter is handed
 * out until a reservation is durable. -EBADMSG when a slot is damaged and none is
 * valid: counters may have been used that cannot be known, so the device must move to
 * a new key (a new window) before erasing the store and starting again. */
int stele_counter_open(stele_counter *c, const stele_counter_storage *storage, uint32_t block);
/* The next counter, strictly greater than every counter handed out before, across power
 * loss. Writes a new reservation when the current one is used up; on a storage error
 * returns it and hands out nothing (-EOVERFLOW when the counter space is exhausted). */
int stele_counter_next(stele_counter *c, uint64_t *out);

#endif
