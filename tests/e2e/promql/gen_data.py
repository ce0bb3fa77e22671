#!/usr/bin/env python3
"""gen_data.py — the data set of the PromQL differential test (10_promql_diff.sh).

Generates one seeded set of samples and writes it twice, once per database under test:
  --om FILE   OpenMetrics text for `promtool tsdb create-blocks-from openmetrics FILE DIR`
              (real Prometheus reads the blocks);
  --lp FILE   Influx line protocol, precision=ms, for Stele's POST /write.
Same seed and --end give byte-identical files, so a failure can be replayed.

Design choices:
- Names. Every metric name has an underscore; its last "_part" is the field and the
  rest the measurement (`http_requests_total` → measurement `http_requests`, field
  `total`), so Stele's metric name `measurement_field` is exactly the Prometheus name.
  Samples of one measurement with the same tags and timestamp share a line (several
  fields), as real writers send them.
- Types. Every family is declared `gauge`: OpenMetrics wants counters named `_total`
  with `_created` rules, and PromQL functions ignore the declared type anyway.
- Values are written with Python's repr (shortest text that reads back as the same
  float64) in both files, so both stores hold bit-identical values.
- Timestamps are integer milliseconds. promtool reads OpenMetrics timestamps as float
  seconds and truncates `int64(ts * 1000)`, so each one is written as the decimal
  seconds text and checked to come back as the same ms under exactly that arithmetic
  (IEEE double, as Go does); if it would not, half a millisecond is added to the text
  (still truncated to the intended ms).
- No NaN or ±Inf samples: Stele's line protocol refuses them (SPEC §2, as InfluxDB
  does), so the same data cannot reach both stores. NaN and ±Inf are produced by the
  queries instead (0/0, x/0, overflow of 1e300-sized values, NaN literals).
- Order. OpenMetrics: families one after another, each series' samples in time order
  (promtool's block appender refuses out-of-order samples). Line protocol: roughly in
  time order with ±1 min of shuffling (out-of-order arrival), cut in two by the
  comment line FLUSH_MARKER: the harness seals the first part into blocks with POST
  /api/v1/admin/flush before it writes the second. One series (node_temp_celsius
  host="c") is held back entirely to the second part and written newest first: a
  device that comes back after hours and uploads its backlog into sealed time ranges.

What the data covers (START = END - 3h):
  node_temp_celsius       gauge, decimals, 15 s aligned; host d crosses zero (abs)
  http_requests_total     counters with resets (to 0 and to small values), 30 s with
                          ±2.5 s jitter and 3 % missing scrapes (irregular timestamps)
  process_cpu_seconds     fractional counter, 60 s, one reset
  disk_used_bytes         ~1e11 values with fractions, 60 s, phase 7.25 s
  sparse_events_count     present in bursts, gaps of 6–25 min (longer than the 5 min
                          lookback)
  churn_active_sessions   series that appear and disappear (and one that comes back)
  weird_labels_value      label values with regex-special characters, quotes, a
                          backslash, a space, LP-escaped characters, UTF-8, and
                          empty-looking values ("-", "null", "0"); label `opt` only on
                          some series (so {opt=""} matches the others)
  ratio_num, ratio_den    one line, two fields; zero denominators and 0/0 periods
  round_test_value        multiples of 0.25/0.5 incl. ties (x.5) and negatives
  tie_score_points        values from {1,2,3}: topk/bottomk ties
  job:http_rate5m         a recording-rule style name with a colon
  extreme_values_value    ±1e300-sized, 1e-300-sized and near-DBL_MAX values: overflow
                          (also of sums inside sum/avg and *_over_time), underflow
"""
import argparse
import math
import random

FLUSH_MARKER = "# stele-e2e: flush here"

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DURATION = 3 * HOUR


class Data:
    def __init__(self):
        # (metric, tuple(sorted labels)) -> {ts_ms: value}
        self.series = {}
        self.order = []  # metric names in first-seen order (OpenMetrics families)

    def add(self, metric, labels, ts, value):
        assert "_" in metric, metric
        assert isinstance(value, float) and math.isfinite(value), (metric, value)
        key = (metric, tuple(sorted(labels.items())))
        if metric not in self.order:
            self.order.append(metric)
        samples = self.series.setdefault(key, {})
        assert ts not in samples, ("duplicate timestamp", key, ts)
        samples[ts] = value


def regular(start, end, step, phase=0):
    t = start + phase
    while t <= end:
        yield t
        t += step


def gen(rng, start, end):
    d = Data()

    # node_temp_celsius: 15 s aligned, decimals; host d hovers around zero.
    hosts = [("a", "eu", 21.0), ("b", "eu", 23.5), ("c", "us", 19.0), ("d", "us", -0.5)]
    for host, dc, base in hosts:
        amp = rng.uniform(2.0, 5.0)
        for t in regular(start, end, 15 * SECOND):
            x = (t - start) / HOUR
            v = base + amp * math.sin(x * 2.1 + len(host)) + rng.gauss(0, 0.7)
            d.add("node_temp_celsius", {"host": host, "dc": dc}, t, v)

    # http_requests_total: irregular 30 s scrapes, resets.
    http = [("api", "i1", "GET"), ("api", "i1", "POST"), ("api", "i2", "GET"),
            ("web", "i1", "GET"), ("web", "i2", "GET"), ("web", "i2", "POST")]
    for n, (job, inst, method) in enumerate(http):
        phase = rng.randrange(0, 30 * SECOND)
        resets = set(rng.sample(range(20, 350), n % 3))  # 0, 1 or 2 resets
        # Half start near zero: rate/increase must then not extrapolate below zero.
        v = float(rng.randrange(0, 1000)) if n % 2 else float(n)
        for k, t in enumerate(regular(start, end - 3 * SECOND, 30 * SECOND, phase)):
            if rng.random() < 0.03:
                continue  # missed scrape
            t += rng.randrange(-2500, 2501)
            if k in resets:
                v = float(rng.choice([0, 0, 3, 7]))
            else:
                v += float(rng.choice([0, 0, 1, 2, 5, 13, 40]))
            d.add("http_requests_total", {"job": job, "instance": inst, "method": method}, t, v)

    # process_cpu_seconds: fractional counter, one reset on i2.
    for inst in ("i1", "i2"):
        v = rng.uniform(100, 200)
        reset_at = rng.randrange(60, 120) if inst == "i2" else -1
        for k, t in enumerate(regular(start, end, MINUTE, rng.randrange(0, MINUTE))):
            v = rng.uniform(0, 2) if k == reset_at else v + rng.uniform(0, 30)
            d.add("process_cpu_seconds", {"instance": inst}, t, v)

    # disk_used_bytes: large values with binary fractions and arbitrary decimals.
    for mount in ("/", "/var", "/data"):
        v = rng.uniform(5e10, 2e11)
        for t in regular(start, end, MINUTE, 7250):
            v += rng.choice([0.125, -0.375, 4096.0, rng.uniform(-1e6, 3e6)])
            d.add("disk_used_bytes", {"mount": mount}, t, v)

    # sparse_events_count: bursts of 5–20 min at 30 s, gaps of 6–25 min.
    for kind in ("x", "y"):
        t = start + rng.randrange(0, 10 * MINUTE)
        while t <= end:
            burst_end = min(t + rng.randrange(5, 21) * MINUTE, end)
            while t <= burst_end:
                d.add("sparse_events_count", {"kind": kind}, t, float(rng.randrange(0, 100)))
                t += 30 * SECOND
            t += rng.randrange(6, 26) * MINUTE

    # churn_active_sessions: series with lifetimes inside the window.
    lifetimes = {
        "pod-0": [(0, DURATION)],
        "pod-1": [(30 * MINUTE, 100 * MINUTE)],
        "pod-2": [(60 * MINUTE, DURATION)],
        "pod-3": [(20 * MINUTE, 50 * MINUTE), (120 * MINUTE, 150 * MINUTE)],
        "pod-4": [(DURATION - 40 * MINUTE, DURATION - 3 * MINUTE)],
    }
    for pod, spans in lifetimes.items():
        for lo, hi in spans:
            for t in regular(start + lo, start + hi, 15 * SECOND):
                d.add("churn_active_sessions", {"pod": pod}, t, float(rng.randrange(0, 500)))

    # weird_labels_value: awkward label values; `opt` only on some series.
    paths = [("a.b", "yes"), ("axb", "yes"), ("(x)+", None), ("a|b", None), ("[q]", "0"),
             ("^$", None), (" ", None), ("-", "yes"), ("null", None), ("µs", None),
             ('say "hi"', None), ("c,d=e f", None), ("a\\d", None)]
    for n, (path, opt) in enumerate(paths):
        labels = {"path": path}
        if opt is not None:
            labels["opt"] = opt
        for t in regular(start, end, MINUTE, n * 1000):
            d.add("weird_labels_value", labels, t, round(rng.uniform(-10, 10), rng.randrange(0, 6)))

    # ratio_num / ratio_den: one LP line; shard 0 has a zero denominator for 20 min,
    # shard 1 has 0/0 for 20 min, shard 2 sometimes a negative numerator.
    for shard in ("0", "1", "2"):
        for t in regular(start, end, 30 * SECOND):
            m = (t - start) // MINUTE
            num = rng.uniform(-5, 50) if shard == "2" else rng.uniform(0, 50)
            den = rng.uniform(1, 10)
            if shard == "0" and 60 <= m < 80:
                den = 0.0
            if shard == "1" and 90 <= m < 110:
                num, den = 0.0, 0.0
            d.add("ratio_num", {"shard": shard}, t, num)
            d.add("ratio_den", {"shard": shard}, t, den)

    # round_test_value: ties and negatives.
    for t in regular(start, end, MINUTE):
        d.add("round_test_value", {"set": "a"}, t, rng.randrange(-12, 13) * 0.25)
        d.add("round_test_value", {"set": "b"}, t,
              rng.choice([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.05, 0.15, 0.25, 0.35, 1.005, -1.005]))

    # tie_score_points: few distinct values, so topk/bottomk meet ties.
    for team in ("red", "green", "blue", "gold", "gray"):
        for t in regular(start, end, MINUTE):
            d.add("tie_score_points", {"team": team}, t, float(rng.choice([1, 2, 3])))

    # job:http_rate5m: a recording-rule style name.
    for job in ("api", "web"):
        for t in regular(start, end, MINUTE, 30 * SECOND):
            d.add("job:http_rate5m", {"job": job}, t, rng.uniform(0, 20))

    # extreme_values_value: overflow and underflow material.
    # nearmax1/2: sums of a few overflow float64 where a mean does not.
    for kind, lo, hi in (("tiny", 1e-300, 9e-300), ("huge", 1e300, 9e300), ("neghuge", -9e300, -1e300),
                         ("nearmax1", 1e307, 1.7e308), ("nearmax2", 1e307, 1.7e308)):
        for t in regular(start, end, MINUTE, 3 * SECOND):
            d.add("extreme_values_value", {"kind": kind}, t, rng.uniform(lo, hi))
    return d


# ------------------------------------------------------------------ OpenMetrics

def om_escape(v):
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def om_timestamp(ms):
    """Seconds text that promtool turns back into exactly `ms` (int64(float*1000))."""
    sign = "-" if ms < 0 else ""
    a = abs(ms)
    text = "%s%d.%03d" % (sign, a // 1000, a % 1000)
    if int(float(text) * 1000) == ms:
        return text
    text += "5"  # ms + 0.5: truncation lands on ms whatever the rounding of the product
    assert int(float(text) * 1000) == ms, (ms, text)
    return text


def write_om(d, path):
    with open(path, "w", encoding="utf-8") as f:
        for metric in d.order:
            f.write("# TYPE %s gauge\n" % metric)
            for (name, labels), samples in sorted(d.series.items()):
                if name != metric:
                    continue
                lbl = ""
                if labels:
                    lbl = "{" + ",".join('%s="%s"' % (k, om_escape(v)) for k, v in labels) + "}"
                for ts in sorted(samples):
                    f.write("%s%s %s %s\n" % (metric, lbl, repr(samples[ts]), om_timestamp(ts)))
        f.write("# EOF\n")


# ------------------------------------------------------------------ line protocol

def lp_escape(s, specials):
    for c in specials:
        s = s.replace(c, "\\" + c)
    return s


def write_lp(d, path, rng, start):
    split = start + 105 * MINUTE  # the flush point: 1h45m into the 3 h window
    held_back = ("node_temp_celsius", (("dc", "us"), ("host", "c")))
    # Group samples into lines: (measurement, tags, ts) -> [(field, value)].
    lines = {}
    for (metric, labels), samples in d.series.items():
        measurement, field = metric.rsplit("_", 1)
        for ts, v in samples.items():
            key = (measurement, labels, ts, (metric, labels) == held_back)
            lines.setdefault(key, []).append((field, v))
    first, second, late = [], [], []
    for (measurement, labels, ts, is_late), fields in sorted(lines.items()):
        text = lp_escape(measurement, ", ")
        for k, v in labels:
            text += "," + lp_escape(k, ",= ") + "=" + lp_escape(v, ",= ")
        text += " " + ",".join(lp_escape(f, ",= ") + "=" + repr(v) for f, v in sorted(fields))
        text += " %d" % ts
        if is_late:
            late.append((ts, text))
        else:
            # Arrival order: time order shuffled by up to ±1 min.
            (first if ts < split else second).append((ts + rng.uniform(-MINUTE, MINUTE), text))
    first.sort()
    second.sort()
    late.sort(reverse=True)
    with open(path, "w", encoding="utf-8") as f:
        for _, text in first:
            f.write(text + "\n")
        f.write(FLUSH_MARKER + "\n")
        for _, text in late + second:
            f.write(text + "\n")
    return len(first) + len(second) + len(late)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--end", type=int, required=True, help="end of the data, unix seconds")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--om", required=True, help="OpenMetrics output file")
    ap.add_argument("--lp", required=True, help="line protocol output file")
    args = ap.parse_args()
    end = args.end * 1000
    start = end - DURATION
    d = gen(random.Random(args.seed), start, end)
    write_om(d, args.om)
    nlines = write_lp(d, args.lp, random.Random(args.seed + 1), start)
    nsamples = sum(len(s) for s in d.series.values())
    print("gen_data: seed %d, %d series, %d samples, %d line protocol lines, %s .. %s (ms)"
          % (args.seed, len(d.series), nsamples, nlines, start, end))


if __name__ == "__main__":
    main()
