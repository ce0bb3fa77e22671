/*
 * query_pool.h — the bounded worker pool queries run on (SPEC §8).
 *
 * Isolation by construction: a query never runs on an HTTP connection thread. The
 * connection thread submits a job and waits; a fixed number of worker threads (run at
 * a lower scheduling priority than ingestion) evaluate jobs from a bounded queue. When
 * the queue is full, or the tenant already has its maximum of queries queued or
 * running, submission fails at once and the caller answers 429 with Retry-After.
 * Ingestion (parse → log → fsync → ack) shares no lock and no memory budget with this
 * pool.
 */
#ifndef STELE_SERVER_QUERY_POOL_H
#define STELE_SERVER_QUERY_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "stele/query.h"

typedef struct query_job query_job;

/* The work a job does, on a worker thread; the job's result fields are its output. */
typedef void (*query_job_fn)(query_job *job);

struct query_job {
    query_job_fn run;
    void *ctx; /* for run */
    char tenant[65];
    volatile int cancel; /* set by the submitter when it gives up waiting */
    /* completion */
    pthread_mutex_t mu;
    pthread_cond_t done_cond;
    bool done;
    query_job *next;
};

typedef struct query_pool query_pool;

/* Starts `threads` workers with a queue of `queue_cap` jobs. */
int query_pool_create(unsigned threads, unsigned queue_cap, query_pool **out);
void query_pool_destroy(query_pool *p);

/* Queues job (initialised by the caller with run/ctx/tenant). -EBUSY when the queue is
 * full, -EUSERS when the tenant already has max_per_tenant jobs queued or running. */
int query_pool_submit(query_pool *p, query_job *job, unsigned max_per_tenant);
/* Waits until the job is done or timeout_ns passed (then sets cancel and keeps
 * waiting for the worker to notice). */
void query_pool_wait(query_job *job, int64_t timeout_ns);
void query_job_init(query_job *job);
void query_job_destroy(query_job *job);

typedef struct {
    uint64_t queued;
    uint64_t running;
    uint64_t completed;
} query_pool_stats;
void query_pool_get_stats(query_pool *p, query_pool_stats *st);

#endif
