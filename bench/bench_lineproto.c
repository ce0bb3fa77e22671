/*
 * bench_lineproto.c — micro-benchmark of the line protocol parser alone.
 *
 * Builds a body of TSBS-iot-like points in memory (half "readings" with 7 float fields,
 * half "diagnostics" with 3; 8 tags written in TSBS' order, which is not sorted, so
 * the parser's sort is on the measured path), then parses it several times with one
 * parser and a callback that only touches every value. Prints, per round and for the
 * best round, MB/s, lines/s and fields/s. It measures; it asserts nothing about speed.
 *
 *   bench_lineproto [lines (default 200000)] [rounds (default 7)]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/lineproto.h"

static const char *const fleets[] = {"South", "North", "East", "West", "Central"};
static const char *const drivers[] = {"Trish", "Derek", "Albert", "Rodney", "Seth", "Andy"};
static const char *const models[] = {"H-2", "F-150", "G-2000"};
static const char *const versions[] = {"v1.0", "v1.5", "v2.0", "v2.3"};

static uint64_t rng = 0x5EED5EED5EED5EEDu;

static uint32_t next_below(uint32_t n)
{
    rng ^= rng << 13; /* xorshift64: reproducible bodies from run to run */
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Appends one point for truck `truck` at time `ts`; returns bytes written. */
static size_t write_point(char *o, size_t cap, uint32_t truck, int64_t ts, int diagnostics)
{
    const char *fleet = fleets[truck % 5], *driver = drivers[truck % 6];
    const char *model = models[truck % 3], *version = versions[truck % 4];
    unsigned load = 500u * (1 + truck % 3), fuel = 50u * (1 + truck % 3);
    int n;
    /* Draw the values in a fixed order (argument evaluation order is unspecified). */
    unsigned v[10];
    for (int i = 0; i < 10; i++)
        v[i] = next_below(i == 1 || i == 3 ? 100000 : i == 0 ? 90 : i == 2 ? 180 : 360);
    if (!diagnostics)
        n = snprintf(o, cap,
                     "readings,name=truck_%u,fleet=%s,driver=%s,model=%s,device_version=%s,"
                     "load_capacity=%u,fuel_capacity=%u,nominal_fuel_consumption=%u "
                     "latitude=%u.%05u,longitude=%u.%05u,elevation=%u,velocity=%u,"
                     "heading=%u,grade=%u,fuel_consumption=%u.%u %lld\n",
                     truck, fleet, driver, model, version, load, fuel, 5 + truck % 20, v[0], v[1],
                     v[2], v[3], v[4] + 20, v[5] % 100, v[6], v[7] % 100, v[8] % 50, v[9] % 10,
                     (long long)ts);
    else
        n = snprintf(o, cap,
                     "diagnostics,name=truck_%u,fleet=%s,driver=%s,model=%s,device_version=%s,"
                     "load_capacity=%u,fuel_capacity=%u,nominal_fuel_consumption=%u "
                     "fuel_state=0.%u,current_load=%u,status=%u %lld\n",
                     truck, fleet, driver, model, version, load, fuel, 5 + truck % 20, v[0] % 100,
                     v[4] % load, v[5] % 5, (long long)ts);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

typedef struct {
    uint64_t lines;
    uint64_t fields;
    double checksum; /* keeps the values observable */
} bench_sink;

static int count_line(void *ctx, const stele_lp_line *line)
{
    bench_sink *s = ctx;
    s->lines++;
    s->fields += line->nfields;
    for (uint32_t i = 0; i < line->nfields; i++)
        s->checksum += line->fields[i].v.f;
    s->checksum += (double)line->tags[0].value.len;
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int rc = 1;
    unsigned long nlines = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 7;
    char *body = NULL;
    stele_lp_parser *p = NULL;

    if (nlines == 0 || rounds <= 0) {
        fprintf(stderr, "usage: %s [lines > 0] [rounds > 0]\n", argv[0]);
        return 2;
    }
    size_t cap = nlines * 400, len = 0;
    body = malloc(cap);
    if (!body) {
        fprintf(stderr, "bench_lineproto: cannot allocate %zu bytes for the body\n", cap);
        goto fail;
    }
    int64_t ts = INT64_C(1451606400000000000);
    for (unsigned long i = 0; i < nlines; i++) {
        uint32_t truck = (uint32_t)(i / 2 % 4000);
        size_t n = write_point(body + len, cap - len, truck, ts, (int)(i & 1));
        if (n == 0) {
            fprintf(stderr, "bench_lineproto: body buffer too small\n");
            goto fail;
        }
        len += n;
        if ((i / 2) % 4000 == 3999 && (i & 1))
            ts += INT64_C(10000000000);
    }

    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    int err = stele_lp_parser_create(&lim, &p);
    if (err) {
        fprintf(stderr, "bench_lineproto: parser create: %s\n", strerror(-err));
        goto fail;
    }

    printf("body: %lu lines, %.1f MB, %.1f bytes/line\n", nlines, (double)len / 1e6,
           (double)len / (double)nlines);
    double best = 0;
    bench_sink sink = {0};
    for (int r = 0; r < rounds; r++) {
        stele_lp_error perr;
        sink.lines = sink.fields = 0;
        double t0 = now_seconds();
        err = stele_lp_parse(p, body, len, count_line, &sink, &perr);
        double dt = now_seconds() - t0;
        if (err) {
            fprintf(stderr, "bench_lineproto: parse failed at line %u: %s\n", perr.line_no,
                    perr.message);
            goto fail;
        }
        printf("round %d: %.3f s  %8.1f MB/s  %6.2f M lines/s  %6.2f M fields/s\n", r + 1, dt,
               (double)len / dt / 1e6, (double)sink.lines / dt / 1e6,
               (double)sink.fields / dt / 1e6);
        if (best == 0 || dt < best)
            best = dt;
    }
    printf("best:  %.1f MB/s, %.2f M lines/s, %.2f M fields/s (%llu fields per pass, "
           "checksum %.6g)\n",
           (double)len / best / 1e6, (double)sink.lines / best / 1e6,
           (double)sink.fields / best / 1e6, (unsigned long long)sink.fields, sink.checksum);
    rc = 0;

fail:
    stele_lp_parser_destroy(p);
    free(body);
    return rc;
}
