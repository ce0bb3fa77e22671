/*
 * samples.h — sorting and merging runs of samples with "the later write wins".
 *
 * A run is (ts[], v[], n) in write order. sort_dedup orders it by timestamp keeping,
 * for equal timestamps, the value written last. merge combines an older sorted run
 * with a newer one; on equal timestamps the newer value wins.
 */
#ifndef STELE_TSDB_SAMPLES_H
#define STELE_TSDB_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

/* Sorts ts/v in place by timestamp (stable), then removes duplicates keeping the last.
 * Returns the new length, or -ENOMEM. Already sorted, duplicate-free input costs one
 * pass. */
long samples_sort_dedup(int64_t *ts, double *v, size_t n);

/* Merges older (a) and newer (b) sorted, duplicate-free runs into out (room for
 * na + nb). Returns the merged length. */
size_t samples_merge(const int64_t *ats, const double *av, size_t na, const int64_t *bts,
                     const double *bv, size_t nb, int64_t *out_ts, double *out_v);

/* A growable pair of timestamp and value arrays (reads and compaction). */
typedef struct {
    int64_t *ts;
    double *v;
    size_t n;
    size_t cap;
} sample_buf;

/* Makes room for need samples (contents kept). -ENOMEM. */
int sample_buf_reserve(sample_buf *b, size_t need);
void sample_buf_free(sample_buf *b);

#endif
