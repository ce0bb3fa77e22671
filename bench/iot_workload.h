/*
 * iot_workload.h — a deterministic generator of a TSBS-"iot"-like workload, shared by
 * the codec benchmark (which wants numeric columns) and the ingest benchmark (which
 * wants line-protocol text). Header-only so each benchmark stays one .c file.
 *
 * The fleet: `trucks` trucks; every 10 s each truck emits one `readings` line with 7
 * fields and one `diagnostics` line with 3 fields, tagged with the truck's name, fleet,
 * driver, model, device version and capacities (drawn once per truck). Each field is a
 * bounded random walk (normal steps, clamped to its range) rounded to the precision a
 * real sensor reports, so the values are short decimals like "48.12345" or "231":
 *
 *   field             measurement  decimals  step sd  range
 *   latitude          readings     5         0.0005   -90 .. 90
 *   longitude         readings     5         0.0005   -180 .. 180
 *   elevation         readings     0         5        0 .. 5000
 *   velocity          readings     0         1        0 .. 100
 *   heading           readings     0         3        0 .. 359
 *   grade             readings     0         0.5      0 .. 100
 *   fuel_consumption  readings     1         0.5      0 .. 50
 *   fuel_state        diagnostics  3         0.005    0 .. 1
 *   current_load      diagnostics  0         10       0 .. load_capacity
 *   status            diagnostics  0         (jump)   0 .. 5, with probability 0.02 per
 *                                                     step a new uniform value
 * Walks start uniformly inside their range.
 *
 * Determinism: the same (trucks, seed, start_ns) gives the same bytes on every run and
 * machine. The PRNG is splitmix64 (one add and three multiply/xor-shifts per draw); a
 * normal step is the sum of four 16-bit uniforms taken from one draw (Irwin–Hall, n=4:
 * close enough to a normal for a benchmark, and bounded at ±3.46 sd). Only IEEE-exact
 * operations feed the rounding, so no platform difference can creep in.
 *
 * Two ways to consume it — use one per workload, not both:
 *   - lines: iot_workload_next_line() writes the next line ("readings,name=truck_0,...
 *     latitude=...,... 1451606400000000000\n") in time order: for each tick, truck 0
 *     readings, truck 0 diagnostics, truck 1 readings, ... then the tick 10 s later;
 *   - columns: iot_workload_tick() advances every truck one tick; then now_ns is the
 *     tick's timestamp and iot_workload_value(w, truck, field) the reading, exactly the
 *     double a correct line-protocol parser gets from the text (scaled / 10^decimals).
 *
 *   iot_workload w;
 *   if (iot_workload_init(&w, 1000, 42, 1451606400000000000) != 0) ...
 *   char line[IOT_LINE_MAX];
 *   int len = iot_workload_next_line(&w, line, sizeof line);   // > 0: bytes written
 *   iot_workload_free(&w);
 */
#ifndef STELE_BENCH_IOT_WORKLOAD_H
#define STELE_BENCH_IOT_WORKLOAD_H

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* TSBS iot reports every 10 s per truck. */
#define IOT_INTERVAL_NS 10000000000LL

/* Longest line: ~160 bytes of tags (a 10-digit truck number, the longest fleet and
 * driver names), ~110 of fields, 21 of timestamp; 512 leaves room and is a cheap stack
 * buffer. iot_workload_next_line() returns -ENOSPC rather than truncate. */
#define IOT_LINE_MAX 512

/* Probability per step that `status` jumps to a new random value (it is a rarely
 * changing state code, the part of the workload that run-length coding should eat). */
#define IOT_STATUS_JUMP_PROB 0.02

enum iot_field {
    IOT_LATITUDE,
    IOT_LONGITUDE,
    IOT_ELEVATION,
    IOT_VELOCITY,
    IOT_HEADING,
    IOT_GRADE,
    IOT_FUEL_CONSUMPTION,
    IOT_FUEL_STATE, /* the first diagnostics field */
    IOT_CURRENT_LOAD,
    IOT_STATUS,
    IOT_FIELDS
};
#define IOT_READINGS_FIELDS 7 /* readings: IOT_LATITUDE .. IOT_FUEL_CONSUMPTION */

typedef struct iot_field_spec {
    const char *measurement;
    const char *name;
    int decimals;   /* the reading is round(walk * 10^decimals) / 10^decimals */
    double step_sd; /* standard deviation of one random-walk step */
    double lo, hi;  /* clamp range; current_load's hi is the truck's load_capacity */
} iot_field_spec;

typedef struct iot_truck {
    uint8_t fleet, driver, model, device_version; /* indexes into the tag tables */
    uint16_t load_capacity, fuel_capacity, nominal_fuel_consumption;
    double walk[IOT_FIELDS];    /* unrounded random-walk state */
    int64_t scaled[IOT_FIELDS]; /* the reading times 10^decimals (an exact integer) */
    double value[IOT_FIELDS];   /* the reading: scaled / 10^decimals */
} iot_truck;

typedef struct iot_workload {
    uint32_t trucks;
    uint64_t rng;        /* splitmix64 state */
    int64_t start_ns;    /* timestamp of tick 0 */
    int64_t now_ns;      /* timestamp of the current tick (valid after the first tick) */
    uint64_t ticks;      /* ticks generated so far */
    uint32_t line_truck; /* line API cursor: next truck in the current tick ... */
    uint8_t line_kind;   /* ... and 0 = its readings line next, 1 = diagnostics */
    iot_truck *truck;    /* trucks entries, owned */
} iot_workload;

static inline const iot_field_spec *iot_field_spec_of(enum iot_field f)
{
    static const iot_field_spec specs[IOT_FIELDS] = {
        {"readings", "latitude", 5, 0.0005, -90, 90},
        {"readings", "longitude", 5, 0.0005, -180, 180},
        {"readings", "elevation", 0, 5, 0, 5000},
        {"readings", "velocity", 0, 1, 0, 100},
        {"readings", "heading", 0, 3, 0, 359},
        {"readings", "grade", 0, 0.5, 0, 100},
        {"readings", "fuel_consumption", 1, 0.5, 0, 50},
        {"diagnostics", "fuel_state", 3, 0.005, 0, 1},
        {"diagnostics", "current_load", 0, 10, 0, 5000},
        {"diagnostics", "status", 0, 0, 0, 5},
    };
    return &specs[f];
}

static inline const char *iot_fleet_name(unsigned i)
{
    static const char *const names[] = {"North", "South", "East", "West", "Central"};
    return names[i];
}
#define IOT_FLEETS 5

static inline const char *iot_driver_name(unsigned i)
{
    static const char *const names[] = {"Albert", "Andy", "Derek", "Ingrid",
                                        "Juno",   "Rosa", "Seth",  "Trish"};
    return names[i];
}
#define IOT_DRIVERS 8

static inline const char *iot_model_name(unsigned i)
{
    static const char *const names[] = {"F-150", "G-2000", "H-2"};
    return names[i];
}
#define IOT_MODELS 3

static inline const char *iot_device_version_name(unsigned i)
{
    static const char *const names[] = {"v1.0", "v1.5", "v2.0"};
    return names[i];
}
#define IOT_DEVICE_VERSIONS 3

static inline uint64_t iot_rand(iot_workload *w)
{
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double iot_rand_unit(iot_workload *w)
{
    return (double)(iot_rand(w) >> 11) * 0x1p-53;
}

static inline uint32_t iot_rand_below(iot_workload *w, uint32_t n)
{
    return (uint32_t)(((iot_rand(w) >> 32) * n) >> 32);
}

/* Approximately N(0, 1): four 16-bit uniforms have mean 131070 and sd 65536/sqrt(3). */
static inline double iot_rand_normal(iot_workload *w)
{
    uint64_t r = iot_rand(w);
    double sum = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) +
                 (double)((r >> 32) & 0xffff) + (double)(r >> 48);
    return (sum - 131070.0) * (1.7320508075688772 / 65536.0);
}

static inline double iot_pow10(int d)
{
    static const double p[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    return p[d];
}

static inline double iot_field_hi(const iot_truck *t, enum iot_field f)
{
    return f == IOT_CURRENT_LOAD ? (double)t->load_capacity : iot_field_spec_of(f)->hi;
}

static inline void iot_truck_round(iot_truck *t, enum iot_field f)
{
    double p = iot_pow10(iot_field_spec_of(f)->decimals);
    t->scaled[f] = (int64_t)round(t->walk[f] * p);
    /* What a parser reads back from the printed text; +0.0 for 0, never -0.0. */
    t->value[f] = (double)t->scaled[f] / p;
}

static inline void iot_truck_step(iot_workload *w, iot_truck *t)
{
    for (int f = 0; f < IOT_FIELDS; f++) {
        const iot_field_spec *s = iot_field_spec_of((enum iot_field)f);
        if (f == IOT_STATUS) {
            if (iot_rand_unit(w) < IOT_STATUS_JUMP_PROB)
                t->walk[f] = (double)iot_rand_below(w, 6);
        } else {
            double x = t->walk[f] + s->step_sd * iot_rand_normal(w);
            double hi = iot_field_hi(t, (enum iot_field)f);
            t->walk[f] = x < s->lo ? s->lo : x > hi ? hi : x;
        }
        iot_truck_round(t, (enum iot_field)f);
    }
}

static inline void iot_truck_init(iot_workload *w, iot_truck *t)
{
    static const uint16_t load[] = {1500, 2000, 5000};
    static const uint16_t fuel[] = {150, 200, 300};
    static const uint16_t nominal[] = {5, 10, 15, 20};
    t->fleet = (uint8_t)iot_rand_below(w, IOT_FLEETS);
    t->driver = (uint8_t)iot_rand_below(w, IOT_DRIVERS);
    t->model = (uint8_t)iot_rand_below(w, IOT_MODELS);
    t->device_version = (uint8_t)iot_rand_below(w, IOT_DEVICE_VERSIONS);
    t->load_capacity = load[iot_rand_below(w, 3)];
    t->fuel_capacity = fuel[iot_rand_below(w, 3)];
    t->nominal_fuel_consumption = nominal[iot_rand_below(w, 4)];
    for (int f = 0; f < IOT_FIELDS; f++) {
        const iot_field_spec *s = iot_field_spec_of((enum iot_field)f);
        double hi = iot_field_hi(t, (enum iot_field)f);
        if (f == IOT_STATUS)
            t->walk[f] = (double)iot_rand_below(w, 6);
        else
            t->walk[f] = s->lo + (hi - s->lo) * iot_rand_unit(w);
        iot_truck_round(t, (enum iot_field)f);
    }
}

/* 0, -EINVAL for zero trucks, -ENOMEM. */
static inline int iot_workload_init(iot_workload *w, uint32_t trucks, uint64_t seed,
                                    int64_t start_ns)
{
    memset(w, 0, sizeof *w);
    if (trucks == 0)
        return -EINVAL;
    w->truck = calloc(trucks, sizeof *w->truck);
    if (!w->truck)
        return -ENOMEM;
    w->trucks = trucks;
    w->rng = seed;
    w->start_ns = start_ns;
    for (uint32_t i = 0; i < trucks; i++)
        iot_truck_init(w, &w->truck[i]);
    return 0;
}

static inline void iot_workload_free(iot_workload *w)
{
    if (!w)
        return;
    free(w->truck);
    w->truck = NULL;
}

/* Advances to the next tick: the first call yields tick 0 (the initial readings), each
 * later call moves every truck one step. */
static inline void iot_workload_tick(iot_workload *w)
{
    if (w->ticks > 0)
        for (uint32_t i = 0; i < w->trucks; i++)
            iot_truck_step(w, &w->truck[i]);
    w->now_ns = w->start_ns + (int64_t)w->ticks * IOT_INTERVAL_NS;
    w->ticks++;
}

static inline double iot_workload_value(const iot_workload *w, uint32_t truck, enum iot_field f)
{
    return w->truck[truck].value[f];
}

/* --- line formatting: appends without snprintf (the ingest benchmark wants to
 * generate lines much faster than the server parses them) --- */

typedef struct iot_out {
    char *p, *end;
    int overflow;
} iot_out;

static inline void iot_put_str(iot_out *o, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(o->end - o->p) < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static inline void iot_put_u64(iot_out *o, uint64_t v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < min_digits);
    if (o->end - o->p < n) {
        o->overflow = 1;
        return;
    }
    while (n)
        *o->p++ = tmp[--n];
}

static inline void iot_put_i64(iot_out *o, int64_t v)
{
    if (v < 0)
        iot_put_str(o, "-");
    iot_put_u64(o, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 1);
}

/* scaled / 10^decimals as text with exactly `decimals` digits after the point. */
static inline void iot_put_decimal(iot_out *o, int64_t scaled, int decimals)
{
    uint64_t mag = scaled < 0 ? 0 - (uint64_t)scaled : (uint64_t)scaled;
    uint64_t p = (uint64_t)iot_pow10(decimals);
    if (scaled < 0)
        iot_put_str(o, "-");
    iot_put_u64(o, mag / p, 1);
    if (decimals > 0) {
        iot_put_str(o, ".");
        iot_put_u64(o, mag % p, decimals);
    }
}

/* Writes the next line (with its trailing '\n', no NUL) into buf; returns its length,
 * or -ENOSPC if cap is too small (IOT_LINE_MAX always suffices; the workload does not
 * advance then). */
static inline int iot_workload_next_line(iot_workload *w, char *buf, size_t cap)
{
    if (w->ticks == 0)
        iot_workload_tick(w);
    const iot_truck *t = &w->truck[w->line_truck];
    int diag = w->line_kind;
    int first = diag ? IOT_FUEL_STATE : IOT_LATITUDE;
    int last = diag ? IOT_FIELDS : IOT_READINGS_FIELDS;
    iot_out o = {buf, buf + cap, 0};

    iot_put_str(&o, iot_field_spec_of((enum iot_field)first)->measurement);
    iot_put_str(&o, ",name=truck_");
    iot_put_u64(&o, w->line_truck, 1);
    iot_put_str(&o, ",fleet=");
    iot_put_str(&o, iot_fleet_name(t->fleet));
    iot_put_str(&o, ",driver=");
    iot_put_str(&o, iot_driver_name(t->driver));
    iot_put_str(&o, ",model=");
    iot_put_str(&o, iot_model_name(t->model));
    iot_put_str(&o, ",device_version=");
    iot_put_str(&o, iot_device_version_name(t->device_version));
    iot_put_str(&o, ",load_capacity=");
    iot_put_u64(&o, t->load_capacity, 1);
    iot_put_str(&o, ",fuel_capacity=");
    iot_put_u64(&o, t->fuel_capacity, 1);
    iot_put_str(&o, ",nominal_fuel_consumption=");
    iot_put_u64(&o, t->nominal_fuel_consumption, 1);
    for (int f = first; f < last; f++) {
        iot_put_str(&o, f == first ? " " : ",");
        iot_put_str(&o, iot_field_spec_of((enum iot_field)f)->name);
        iot_put_str(&o, "=");
        iot_put_decimal(&o, t->scaled[f], iot_field_spec_of((enum iot_field)f)->decimals);
    }
    iot_put_str(&o, " ");
    iot_put_i64(&o, w->now_ns);
    iot_put_str(&o, "\n");
    if (o.overflow)
        return -ENOSPC;

    if (++w->line_kind == 2) {
        w->line_kind = 0;
        if (++w->line_truck == w->trucks) {
            w->line_truck = 0;
            iot_workload_tick(w);
        }
    }
    return (int)(o.p - buf);
}

#endif
