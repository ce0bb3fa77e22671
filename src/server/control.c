/*
 * control.c — the server's side of the audit trail (SPEC §7): appending an event for
 * every critical action before it is acknowledged, and a background thread that folds
 * floods of refusals into summaries.
 *
 * An attacker can send rejected frames or bad tokens as fast as the network allows;
 * one audit record each would let them grow the trail without bound. Refusals are only
 * counted on the request path (per claimed device and reason, in a fixed-size table
 * inside the sealed ingester; totals for authentication). Every summary interval the
 * thread writes at most SUMMARY_RECORDS_MAX records for the busiest (device, reason)
 * pairs and one "*" record for the rest, so the trail grows by a bounded number of
 * records per interval whatever arrives.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "server/server_internal.h"

/* Summaries per interval: at the default 10 s, ≤ 3.3 records/s under any flood. */
#define SUMMARY_RECORDS_MAX 32
/* Summaries taken from the ingester per interval (its table size). */
#define SUMMARY_TAKE_MAX 4096
#define DEFAULT_SUMMARY_INTERVAL_NS (10 * INT64_C(1000000000))

int server_audit(stele_server *s, request *r, const char *action, const char *subject,
                 const char *outcome, const char *details)
{
    if (!s->audit)
        return 0;
    char actor[40];
    if (r && r->authenticated)
        snprintf(actor, sizeof(actor), "token:%s", r->token.id);
    else
        snprintf(actor, sizeof(actor), "%s", r ? "anonymous" : "server");
    return server_audit_actor(s, actor, action, subject, outcome, details);
}

int server_audit_actor(stele_server *s, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details)
{
    if (!s->audit)
        return 0;
    int rc = stele_audit_append(s->audit, actor, action, subject, outcome, details, NULL);
    if (rc)
        __atomic_add_fetch(&s->control.audit_failures, 1, __ATOMIC_RELAXED);
    return rc;
}

static int by_count_desc(const void *a, const void *b)
{
    const stele_reject_summary *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

static void summary_append(stele_server *s, const stele_reject_summary *sum)
{
    char subject[STELE_DEVICE_ID_MAX + 8], details[160], from[40], to[40];
    snprintf(subject, sizeof(subject), "device:%s", sum->device);
    format_rfc3339(sum->start_ns, from, sizeof(from));
    format_rfc3339(sum->end_ns, to, sizeof(to));
    snprintf(details, sizeof(details), "count=%" PRIu64 " from=%s to=%s", sum->count, from, to);
    (void)server_audit(s, NULL, "frames.rejected", subject, stele_frame_status_name(sum->status),
                       details);
}

/* One record for the refusals a counter gained since the last round. */
static void summarise_counter(stele_server *s, uint64_t now_value, uint64_t *seen,
                              const char *action, const char *subject, const char *outcome,
                              const char *from, const char *to)
{
    if (now_value <= *seen)
        return;
    char details[160];
    snprintf(details, sizeof(details), "count=%" PRIu64 " from=%s to=%s", now_value - *seen, from,
             to);
    (void)server_audit_actor(s, "server", action, subject, outcome, details);
    *seen = now_value;
}

/* Writes the refusals counted since the last round (see the top). */
static void summarise_round(stele_server *s, uint64_t *auth_seen, uint64_t *forbidden_seen,
                            int64_t since_ns)
{
    int64_t now = clock_wall_ns();
    if (s->sealed) {
        stele_reject_summary *sums = malloc(SUMMARY_TAKE_MAX * sizeof(*sums));
        if (sums) {
            size_t n = stele_sealed_take_rejections(s->sealed, sums, SUMMARY_TAKE_MAX);
            qsort(sums, n, sizeof(*sums), by_count_desc);
            for (size_t i = 0; i < n && i < SUMMARY_RECORDS_MAX; i++)
                summary_append(s, &sums[i]);
            if (n > SUMMARY_RECORDS_MAX) {
                stele_reject_summary rest = {.device = "*",
                                             .status = STELE_FRAME_MALFORMED,
                                             .start_ns = sums[SUMMARY_RECORDS_MAX].start_ns,
                                             .end_ns = sums[SUMMARY_RECORDS_MAX].end_ns};
                for (size_t i = SUMMARY_RECORDS_MAX; i < n; i++) {
                    rest.count += sums[i].count;
                    if (sums[i].start_ns < rest.start_ns)
                        rest.start_ns = sums[i].start_ns;
                    if (sums[i].end_ns > rest.end_ns)
                        rest.end_ns = sums[i].end_ns;
                }
                char details[200], from[40], to[40];
                format_rfc3339(rest.start_ns, from, sizeof(from));
                format_rfc3339(rest.end_ns, to, sizeof(to));
                snprintf(details, sizeof(details),
                         "count=%" PRIu64 " pairs=%zu from=%s to=%s (devices and reasons beyond "
                         "the %d busiest, folded)",
                         rest.count, n - SUMMARY_RECORDS_MAX, from, to, SUMMARY_RECORDS_MAX);
                (void)server_audit(s, NULL, "frames.rejected", "device:*", "various", details);
            }
            free(sums);
        }
    }
    uint64_t auth = __atomic_load_n(&s->counters.auth_failures, __ATOMIC_RELAXED);
    uint64_t forb = __atomic_load_n(&s->counters.forbidden, __ATOMIC_RELAXED);
    char from[40], to[40], details[160];
    format_rfc3339(since_ns, from, sizeof(from));
    format_rfc3339(now, to, sizeof(to));
    summarise_counter(s, __atomic_load_n(&s->control.enroll_refused, __ATOMIC_RELAXED),
                      &s->enroll_refused_seen, "device.enroll", "enroll", "denied", from, to);
    summarise_counter(s, __atomic_load_n(&s->control.rotate_refused, __ATOMIC_RELAXED),
                      &s->rotate_refused_seen, "device.rotate", "rotate", "denied", from, to);
    if (auth > *auth_seen) {
        snprintf(details, sizeof(details), "count=%" PRIu64 " from=%s to=%s", auth - *auth_seen,
                 from, to);
        if (server_audit(s, NULL, "auth.denied", "http", "unauthorized", details) == 0)
            __atomic_add_fetch(&s->control.auth_denials_summarised, 1, __ATOMIC_RELAXED);
        *auth_seen = auth;
    }
    if (forb > *forbidden_seen) {
        snprintf(details, sizeof(details), "count=%" PRIu64 " from=%s to=%s",
                 forb - *forbidden_seen, from, to);
        if (server_audit(s, NULL, "auth.denied", "http", "forbidden", details) == 0)
            __atomic_add_fetch(&s->control.auth_denials_summarised, 1, __ATOMIC_RELAXED);
        *forbidden_seen = forb;
    }
}

static void *summary_main(void *arg)
{
    stele_server *s = arg;
    int64_t interval = s->cfg.audit_summary_interval_ns > 0 ? s->cfg.audit_summary_interval_ns
                                                            : DEFAULT_SUMMARY_INTERVAL_NS;
    uint64_t auth_seen = 0, forbidden_seen = 0;
    int64_t since = clock_wall_ns();
    pthread_mutex_lock(&s->summary_mu);
    while (!s->stopping) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        int64_t at = (int64_t)deadline.tv_sec * 1000000000 + deadline.tv_nsec + interval;
        deadline.tv_sec = (time_t)(at / 1000000000);
        deadline.tv_nsec = (long)(at % 1000000000);
        pthread_cond_timedwait(&s->summary_cond, &s->summary_mu, &deadline);
        bool last = s->stopping;
        pthread_mutex_unlock(&s->summary_mu);
        summarise_round(s, &auth_seen, &forbidden_seen, since);
        since = clock_wall_ns();
        pthread_mutex_lock(&s->summary_mu);
        if (last)
            break;
    }
    pthread_mutex_unlock(&s->summary_mu);
    return NULL;
}

int server_control_start(stele_server *s)
{
    s->registry = s->cfg.registry;
    s->sealed = s->cfg.sealed;
    s->audit = s->cfg.audit;
    pthread_mutex_init(&s->summary_mu, NULL);
    pthread_cond_init(&s->summary_cond, NULL);
    int rc = source_limiter_create(s->cfg.device_failures_per_second, 0, &s->sources);
    if (rc)
        return rc;
    if (s->audit) {
        if (pthread_create(&s->summary_thread, NULL, summary_main, s) != 0)
            return -EAGAIN;
        s->summary_running = true;
    }
    return 0;
}

void server_control_stop(stele_server *s)
{
    if (s->summary_running) {
        pthread_mutex_lock(&s->summary_mu);
        s->stopping = true;
        pthread_cond_signal(&s->summary_cond);
        pthread_mutex_unlock(&s->summary_mu);
        pthread_join(s->summary_thread, NULL);
        s->summary_running = false;
    }
    source_limiter_destroy(s->sources);
    s->sources = NULL;
    pthread_cond_destroy(&s->summary_cond);
    pthread_mutex_destroy(&s->summary_mu);
}
