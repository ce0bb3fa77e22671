/*
 * frames_load.c — the client side of the sealed-telemetry benchmark of issue 5
 * (bench/frames.sh): a fleet of DEVICES simulated devices against a running server.
 *
 *   frames_load --url URL --token ADMIN_TOKEN [--devices N] [--frames F] [--points P]
 *               [--batch B] [--clients C] [--enroll-clients E] [--verify-seconds S]
 *               [--revocations R] [--tenant T]
 *
 * Phases, each reported as one JSON line on stdout:
 *   keys      N Ed25519 key pairs (client side, untimed in the figures).
 *   add       POST /api/v1/devices for every device (E connections): the registry's and
 *             the audit trail's group commit under a burst of admin calls.
 *   enroll    the burst: E threads enroll all N devices at once (POST /api/v1/enroll with
 *             the one-time token and a proof of key possession); time to the last
 *             answer, errors, and afterwards GET /api/v1/devices shows every device
 *             active exactly once with key id 1 (no duplicates, nothing missing).
 *   seal      F frames of P points, round robin over the devices (counters 1, 2, … per
 *             device), sealed before anything is timed and grouped B per request, so the
 *             client spends its CPU on sending only.
 *   verify    the bare cost of the signature check on this machine, in the same run: 1
 *             and then 2 threads (the machine's cores) run stele_frame_verify over the
 *             sealed frames for S seconds each while the server idles. 2-thread
 *             verifications/s is the verification limit of the issue.
 *   send      C threads post the requests (keep-alive); frames/s and points/s from the
 *             first request to the last answer; every result must be `accepted`. A 503
 *             (head full while a flush runs) is retried after 50 ms, as a device would,
 *             and counted; the client's own CPU over the phase is reported.
 *   revoke    R times: a device sends one frame per request in a loop; the admin revokes
 *             it; latency of the admin call, and the first refusal — every frame whose
 *             request started after the revoke call returned must be `revoked`.
 *
 * Devices are <tenant>-dev-<i>; metric names temp_c, with label sensor="s<k>" per point.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/clock.h"
#include "stele/client.h"
#include "stele/frame.h"
#include "stele/keyproof.h"

#define MAX_DEVICES 200000
#define MAX_CLIENTS 64
#define REQUEST_TIMEOUT_MS 60000
/* Frame buffer: 50 points of ~40 bytes plus header and signature. */
#define FRAME_BUF 8192

typedef struct {
    char id[STELE_FRAME_MAX_DEVICE_ID + 1];
    uint8_t pk[32], sk[64];
    char token[80];
    uint64_t next_counter;
} device;

typedef struct {
    const char *url, *admin_token, *tenant;
    size_t ndevices, nframes, points, batch, clients, enroll_clients, revocations;
    double verify_seconds;
} options;

typedef struct {
    uint8_t *data;
    size_t len, frames;
} request_body;

static options opt;
static device *devices;
static uint8_t **frames;
static size_t *frame_lens;
static request_body *bodies;
static size_t nbodies;

static double secs(int64_t ns)
{
    return (double)ns / 1e9;
}

static int http(stele_http_client *c, const char *method, const char *target, const char *ctype,
                const void *body, size_t len, bool admin, stele_http_response *resp)
{
    char auth[256], ct[128];
    const char *headers[3] = {NULL, NULL, NULL};
    size_t h = 0;
    if (admin) {
        snprintf(auth, sizeof(auth), "Authorization: Token %s", opt.admin_token);
        headers[h++] = auth;
    }
    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        headers[h++] = ct;
    }
    return stele_http_request(c, method, target, headers, body, len, resp);
}

static stele_http_client *connect_or_die(void)
{
    stele_http_client *c = NULL;
    if (stele_http_client_create(opt.url, &c) != 0) {
        fprintf(stderr, "frames_load: bad --url %s\n", opt.url);
        exit(2);
    }
    stele_http_client_set_timeout_ms(c, REQUEST_TIMEOUT_MS);
    return c;
}

/* ---- add and enroll ------------------------------------------------------------- */

typedef struct {
    size_t first, step;
    uint64_t ok, errors;
    int phase; /* 0 add, 1 enroll */
} worker;

static void *enroll_worker(void *arg)
{
    worker *w = arg;
    stele_http_client *c = connect_or_die();
    for (size_t i = w->first; i < opt.ndevices; i += w->step) {
        device *d = &devices[i];
        stele_http_response resp = {0};
        char body[1024];
        int rc;
        if (w->phase == 0) {
            snprintf(body, sizeof(body), "{\"id\":\"%s\",\"tenant\":\"%s\"}", d->id, opt.tenant);
            rc = http(c, "POST", "/api/v1/devices", "application/json", body, strlen(body), true,
                      &resp);
            if (rc == 0 && resp.status == 201) {
                json_t *j = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
                const char *t = json_string_value(json_object_get(j, "enroll_token"));
                if (t)
                    snprintf(d->token, sizeof(d->token), "%s", t);
                json_decref(j);
                w->ok += t != NULL;
                w->errors += t == NULL;
            } else {
                if (w->errors++ < 3)
                    fprintf(stderr, "add %s: rc %d status %d %s\n", d->id, rc, resp.status,
                            resp.body ? (const char *)resp.body : "");
            }
        } else {
            uint8_t proof[64];
            char pkhex[65], proofhex[129];
            stele_keyproof_enroll_sign(d->sk, d->id, strlen(d->id), d->token, strlen(d->token),
                                       proof);
            sodium_bin2hex(pkhex, sizeof(pkhex), d->pk, 32);
            sodium_bin2hex(proofhex, sizeof(proofhex), proof, 64);
            snprintf(body, sizeof(body),
                     "{\"device\":\"%s\",\"token\":\"%s\",\"algorithm\":\"ed25519\","
                     "\"public_key\":\"%s\",\"firmware\":\"1.0.0\",\"proof\":\"%s\"}",
                     d->id, d->token, pkhex, proofhex);
            rc = http(c, "POST", "/api/v1/enroll", "application/json", body, strlen(body), false,
                      &resp);
            if (rc == 0 && resp.status == 200)
                w->ok++;
            else if (w->errors++ < 3)
                fprintf(stderr, "enroll %s: rc %d status %d %s\n", d->id, rc, resp.status,
                        resp.body ? (const char *)resp.body : "");
        }
        stele_http_response_free(&resp);
    }
    stele_http_client_destroy(c);
    return NULL;
}

static void run_workers(int phase, const char *name)
{
    size_t n = opt.enroll_clients;
    worker ws[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    int64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < n; i++) {
        ws[i] = (worker){.first = i, .step = n, .phase = phase};
        pthread_create(&th[i], NULL, enroll_worker, &ws[i]);
    }
    uint64_t ok = 0, errors = 0;
    for (size_t i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ok += ws[i].ok;
        errors += ws[i].errors;
    }
    double s = secs(clock_mono_ns() - t0);
    printf("{\"phase\":\"%s\",\"devices\":%zu,\"clients\":%zu,\"ok\":%" PRIu64
           ",\"errors\":%" PRIu64 ",\"seconds\":%.3f,\"per_second\":%.1f}\n",
           name, opt.ndevices, n, ok, errors, s, (double)ok / s);
    fflush(stdout);
}

/* Every device active exactly once, key id 1. */
static void check_enrolled(void)
{
    stele_http_client *c = connect_or_die();
    stele_http_client_set_max_body(c, 1u << 30);
    stele_http_response resp = {0};
    char target[128];
    snprintf(target, sizeof(target), "/api/v1/devices?tenant=%s", opt.tenant);
    int rc = http(c, "GET", target, NULL, NULL, 0, true, &resp);
    size_t active = 0, key1 = 0, total = 0, dup = 0;
    if (rc == 0 && resp.status == 200) {
        json_t *j = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
        json_t *arr = json_object_get(j, "devices"), *d;
        size_t i;
        char *seen = calloc(opt.ndevices, 1);
        json_array_foreach(arr, i, d)
        {
            total++;
            const char *id = json_string_value(json_object_get(d, "id"));
            const char *dash = id ? strrchr(id, '-') : NULL;
            size_t k = dash ? strtoull(dash + 1, NULL, 10) : SIZE_MAX;
            if (k < opt.ndevices && seen[k]++)
                dup++;
            active += !strcmp(json_string_value(json_object_get(d, "state")) ?: "", "active");
            key1 += json_integer_value(json_object_get(json_object_get(d, "key"), "key_id")) == 1;
        }
        free(seen);
        json_decref(j);
    }
    printf("{\"phase\":\"enroll_check\",\"listed\":%zu,\"active\":%zu,\"key_id_1\":%zu,"
           "\"duplicates\":%zu}\n",
           total, active, key1, dup);
    fflush(stdout);
    stele_http_response_free(&resp);
    stele_http_client_destroy(c);
}

/* ---- sealing ------------------------------------------------------------------ */

static int seal_frame(device *d, int64_t base_ts, int64_t step_ns, size_t points, uint8_t *buf,
                      size_t *len)
{
    stele_frame_builder b;
    uint64_t counter = d->next_counter++;
    int rc = stele_frame_begin(&b, buf, FRAME_BUF, d->id, 1, counter);
    for (size_t k = 0; rc == 0 && k < points; k++) {
        char sensor[24];
        snprintf(sensor, sizeof(sensor), "s%zu", k);
        stele_frame_point p = {.metric = "temp_c",
                               .metric_len = 6,
                               .nlabels = 1,
                               .ts = base_ts + (int64_t)counter * step_ns,
                               .value = 20.0 + (double)((counter * 31 + k * 7) % 1000) / 10.0};
        p.labels[0] = (stele_frame_label){"sensor", 6, sensor, strlen(sensor)};
        rc = stele_frame_add(&b, &p);
    }
    return rc ? rc : stele_frame_seal(&b, d->sk, len);
}

static void seal_all(void)
{
    int64_t t0 = clock_mono_ns();
    int64_t base_ts = clock_wall_ns() - 2 * 3600 * INT64_C(1000000000);
    frames = calloc(opt.nframes, sizeof(*frames));
    frame_lens = calloc(opt.nframes, sizeof(*frame_lens));
    uint8_t buf[FRAME_BUF];
    size_t bytes = 0;
    for (size_t f = 0; f < opt.nframes; f++) {
        size_t len = 0;
        if (seal_frame(&devices[f % opt.ndevices], base_ts, 10 * INT64_C(1000000000), opt.points,
                       buf, &len) != 0) {
            fprintf(stderr, "frames_load: sealing failed (too many points?)\n");
            exit(1);
        }
        frames[f] = malloc(len);
        memcpy(frames[f], buf, len);
        frame_lens[f] = len;
        bytes += len;
    }
    nbodies = (opt.nframes + opt.batch - 1) / opt.batch;
    bodies = calloc(nbodies, sizeof(*bodies));
    for (size_t r = 0; r < nbodies; r++) {
        size_t first = r * opt.batch, last = first + opt.batch;
        if (last > opt.nframes)
            last = opt.nframes;
        size_t len = 0;
        for (size_t f = first; f < last; f++)
            len += frame_lens[f];
        bodies[r].data = malloc(len);
        for (size_t f = first; f < last; f++) {
            memcpy(bodies[r].data + bodies[r].len, frames[f], frame_lens[f]);
            bodies[r].len += frame_lens[f];
        }
        bodies[r].frames = last - first;
    }
    printf("{\"phase\":\"seal\",\"frames\":%zu,\"points_per_frame\":%zu,\"bytes\":%zu,"
           "\"bytes_per_frame\":%.1f,\"requests\":%zu,\"seconds\":%.3f}\n",
           opt.nframes, opt.points, bytes, (double)bytes / (double)opt.nframes, nbodies,
           secs(clock_mono_ns() - t0));
    fflush(stdout);
}

/* ---- bare verification -------------------------------------------------------- */

typedef struct {
    size_t first;
    int64_t deadline;
    uint64_t done;
} verifier;

static void *verify_worker(void *arg)
{
    verifier *v = arg;
    uint8_t *scratch = malloc(STELE_FRAME_SCRATCH_BYTES);
    for (size_t f = v->first;; f = (f + 1) % opt.nframes) {
        stele_frame fr;
        const char *why;
        if (stele_frame_parse(frames[f], frame_lens[f], &fr, &why) != 0 ||
            stele_frame_verify(&fr, devices[f % opt.ndevices].pk, scratch,
                               STELE_FRAME_SCRATCH_BYTES) != 0) {
            fprintf(stderr, "frames_load: a sealed frame does not verify\n");
            exit(1);
        }
        if ((++v->done & 63) == 0 && clock_mono_ns() >= v->deadline)
            break;
    }
    free(scratch);
    return NULL;
}

static double measure_verify(size_t threads)
{
    verifier vs[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    int64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < threads; i++) {
        vs[i] = (verifier){.first = i * (opt.nframes / threads),
                           .deadline = t0 + (int64_t)(opt.verify_seconds * 1e9)};
        pthread_create(&th[i], NULL, verify_worker, &vs[i]);
    }
    uint64_t done = 0;
    for (size_t i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        done += vs[i].done;
    }
    double rate = (double)done / secs(clock_mono_ns() - t0);
    printf("{\"phase\":\"verify\",\"threads\":%zu,\"verifications\":%" PRIu64
           ",\"per_second\":%.1f}\n",
           threads, done, rate);
    fflush(stdout);
    return rate;
}

/* ---- sending ------------------------------------------------------------------ */

typedef struct {
    size_t first, step;
    uint64_t frames_ok, frames_bad, requests_failed, retries;
} sender;

static void *send_worker(void *arg)
{
    sender *s = arg;
    stele_http_client *c = connect_or_die();
    for (size_t r = s->first; r < nbodies; r += s->step) {
        stele_http_response resp = {0};
        int rc = http(c, "POST", "/api/v1/frames", "application/vnd.stele.frames", bodies[r].data,
                      bodies[r].len, false, &resp);
        /* 503: the head is full while a flush runs. A device retries the same frames
         * (duplicates are safe); so does the benchmark, after a short pause, and counts it. */
        for (int tries = 0; rc == 0 && resp.status == 503 && tries < 600; tries++) {
            s->retries++;
            stele_http_response_free(&resp);
            struct timespec pause = {0, 50 * 1000000L};
            nanosleep(&pause, NULL);
            rc = http(c, "POST", "/api/v1/frames", "application/vnd.stele.frames", bodies[r].data,
                      bodies[r].len, false, &resp);
        }
        if (rc != 0 || resp.status != 200) {
            if (s->requests_failed++ < 3)
                fprintf(stderr, "frames: rc %d status %d %.300s\n", rc, resp.status,
                        resp.body ? (const char *)resp.body : "");
            s->frames_bad += bodies[r].frames;
        } else {
            /* Count "accepted" without a JSON tree: the client must stay cheap. */
            const char *p = (const char *)resp.body;
            uint64_t ok = 0;
            while ((p = strstr(p, "\"status\":\"")) != NULL) {
                p += 10;
                ok += !strncmp(p, "accepted\"", 9);
            }
            s->frames_ok += ok;
            if (ok != bodies[r].frames && s->frames_bad == 0)
                fprintf(stderr, "frames: not all accepted: %.400s\n", (const char *)resp.body);
            s->frames_bad += bodies[r].frames - ok;
        }
        stele_http_response_free(&resp);
    }
    stele_http_client_destroy(c);
    return NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double run_send(void)
{
    sender ss[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    double cpu0 = cpu_seconds();
    int64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < opt.clients; i++) {
        ss[i] = (sender){.first = i, .step = opt.clients};
        pthread_create(&th[i], NULL, send_worker, &ss[i]);
    }
    uint64_t ok = 0, bad = 0, failed = 0, retries = 0;
    for (size_t i = 0; i < opt.clients; i++) {
        pthread_join(th[i], NULL);
        ok += ss[i].frames_ok;
        bad += ss[i].frames_bad;
        failed += ss[i].requests_failed;
        retries += ss[i].retries;
    }
    double s = secs(clock_mono_ns() - t0);
    double fps = (double)ok / s, client_cpu = cpu_seconds() - cpu0;
    printf("{\"phase\":\"send\",\"frames\":%zu,\"accepted\":%" PRIu64 ",\"not_accepted\":%" PRIu64
           ",\"failed_requests\":%" PRIu64 ",\"retried_503\":%" PRIu64
           ",\"clients\":%zu,\"batch\":%zu,\"seconds\":%.3f,"
           "\"frames_per_second\":%.1f,\"points_per_second\":%.1f,\"client_cpu_cores\":%.3f}\n",
           opt.nframes, ok, bad, failed, retries, opt.clients, opt.batch, s, fps,
           fps * (double)opt.points, client_cpu / s);
    fflush(stdout);
    return fps;
}

/* ---- revocation latency ------------------------------------------------------- */

typedef struct {
    device *d;
    volatile int stop;
    volatile int64_t revoke_returned; /* mono ns, 0 until then */
    int64_t first_refused;            /* mono ns of the first refused answer */
    uint64_t accepted_after;          /* requests started after the revoke returned, accepted */
    uint64_t sent;
} revoke_probe;

static void *probe_worker(void *arg)
{
    revoke_probe *p = arg;
    stele_http_client *c = connect_or_die();
    uint8_t buf[FRAME_BUF];
    int64_t base_ts = clock_wall_ns() - 3600 * INT64_C(1000000000);
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        size_t len;
        int rc = seal_frame(p->d, base_ts, INT64_C(1000000), 1, buf, &len);
        if (rc)
            break;
        int64_t started = clock_mono_ns();
        int64_t returned = __atomic_load_n(&p->revoke_returned, __ATOMIC_ACQUIRE);
        stele_http_response resp = {0};
        rc = http(c, "POST", "/api/v1/frames", "application/vnd.stele.frames", buf, len, false,
                  &resp);
        p->sent++;
        if (rc == 0 && resp.status == 200) {
            bool refused = strstr((const char *)resp.body, "\"revoked\"") != NULL;
            bool accepted = strstr((const char *)resp.body, "\"accepted\"") != NULL;
            if (refused && !p->first_refused)
                p->first_refused = clock_mono_ns();
            if (accepted && returned && started > returned)
                p->accepted_after++;
            if (refused && p->first_refused) {
                stele_http_response_free(&resp);
                break;
            }
        }
        stele_http_response_free(&resp);
    }
    stele_http_client_destroy(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_revocations(void)
{
    if (opt.revocations == 0)
        return;
    double call_ms[256], refuse_ms[256];
    uint64_t violations = 0;
    size_t n = opt.revocations > 256 ? 256 : opt.revocations;
    stele_http_client *admin = connect_or_die();
    for (size_t i = 0; i < n; i++) {
        revoke_probe p = {.d = &devices[opt.ndevices - 1 - i]};
        pthread_t th;
        pthread_create(&th, NULL, probe_worker, &p);
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL);
        char target[160];
        snprintf(target, sizeof(target), "/api/v1/devices/%s/revoke", p.d->id);
        stele_http_response resp = {0};
        int64_t t0 = clock_mono_ns();
        int rc = http(admin, "POST", target, "application/json", "", 0, true, &resp);
        int64_t t1 = clock_mono_ns();
        __atomic_store_n(&p.revoke_returned, t1, __ATOMIC_RELEASE);
        if (rc != 0 || resp.status != 200)
            fprintf(stderr, "revoke %s: rc %d status %d\n", p.d->id, rc, resp.status);
        stele_http_response_free(&resp);
        pthread_join(th, NULL);
        call_ms[i] = (double)(t1 - t0) / 1e6;
        refuse_ms[i] = p.first_refused ? (double)(p.first_refused - t0) / 1e6 : -1;
        violations += p.accepted_after;
    }
    stele_http_client_destroy(admin);
    qsort(call_ms, n, sizeof(double), cmp_double);
    qsort(refuse_ms, n, sizeof(double), cmp_double);
    printf("{\"phase\":\"revoke\",\"revocations\":%zu,\"call_ms_median\":%.3f,\"call_ms_max\":%.3f,"
           "\"first_refusal_ms_median\":%.3f,\"first_refusal_ms_max\":%.3f,"
           "\"accepted_after_revoke_returned\":%" PRIu64 "}\n",
           n, call_ms[n / 2], call_ms[n - 1], refuse_ms[n / 2], refuse_ms[n - 1], violations);
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------------- */

static size_t arg_size(const char *v, size_t lo, size_t hi, const char *name)
{
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "frames_load: %s must be %zu..%zu\n", name, lo, hi);
        exit(2);
    }
    return (size_t)x;
}

int main(int argc, char **argv)
{
    opt = (options){.tenant = "fleet",
                    .ndevices = 10000,
                    .nframes = 200000,
                    .points = 50,
                    .batch = 64,
                    .clients = 4,
                    .enroll_clients = 32,
                    .verify_seconds = 3,
                    .revocations = 20};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "frames_load: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--url"))
            opt.url = v;
        else if (!strcmp(a, "--token"))
            opt.admin_token = v;
        else if (!strcmp(a, "--tenant"))
            opt.tenant = v;
        else if (!strcmp(a, "--devices"))
            opt.ndevices = arg_size(v, 1, MAX_DEVICES, a);
        else if (!strcmp(a, "--frames"))
            opt.nframes = arg_size(v, 1, 100000000, a);
        else if (!strcmp(a, "--points"))
            opt.points = arg_size(v, 1, 200, a);
        else if (!strcmp(a, "--batch"))
            opt.batch = arg_size(v, 1, 4096, a);
        else if (!strcmp(a, "--clients"))
            opt.clients = arg_size(v, 1, MAX_CLIENTS, a);
        else if (!strcmp(a, "--enroll-clients"))
            opt.enroll_clients = arg_size(v, 1, MAX_CLIENTS, a);
        else if (!strcmp(a, "--verify-seconds"))
            opt.verify_seconds = (double)arg_size(v, 1, 600, a);
        else if (!strcmp(a, "--revocations"))
            opt.revocations = arg_size(v, 0, 256, a);
        else {
            fprintf(stderr, "frames_load: unknown option %s\n", a);
            return 2;
        }
    }
    if (!opt.url || !opt.admin_token || sodium_init() < 0) {
        fprintf(stderr, "frames_load: --url and --token are required\n");
        return 2;
    }
    if (opt.revocations > opt.ndevices)
        opt.revocations = opt.ndevices;
    devices = calloc(opt.ndevices, sizeof(*devices));
    int64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < opt.ndevices; i++) {
        snprintf(devices[i].id, sizeof(devices[i].id), "%s-dev-%zu", opt.tenant, i);
        crypto_sign_keypair(devices[i].pk, devices[i].sk);
        devices[i].next_counter = 1;
    }
    printf("{\"phase\":\"keys\",\"devices\":%zu,\"seconds\":%.3f}\n", opt.ndevices,
           secs(clock_mono_ns() - t0));
    run_workers(0, "add");
    run_workers(1, "enroll");
    check_enrolled();
    seal_all();
    double v1 = measure_verify(1);
    double v2 = measure_verify(2);
    double fps = run_send();
    printf("{\"phase\":\"summary\",\"verify_1_thread\":%.1f,\"verify_2_threads\":%.1f,"
           "\"frames_per_second\":%.1f,\"points_per_second\":%.1f,\"of_verify_limit\":%.3f}\n",
           v1, v2, fps, fps * (double)opt.points, fps / v2);
    fflush(stdout);
    run_revocations();
    return 0;
}
