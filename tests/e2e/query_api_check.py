#!/usr/bin/env python3
"""query_api_check.py — data and answer checks for 11_query_api.sh (standard library only).

The test replays the requests Grafana's Prometheus data source sends; this script holds
the one data set those requests read (so the expected answers come from the same
definition as the data) and checks each answer's Prometheus JSON shape and content.

Subcommands (FILE is a response body saved by the test; "-" reads stdin):
  lp END                 prints the Grafana data set as line protocol (precision s):
                         samples every STEP_S seconds from END-3600 to END inclusive.
  labels FILE            a label-name or label-value answer: {"status":"success",
                         "data":[str,…]}, sorted and without duplicates; prints the
                         list joined by ",".
  series FILE            a /api/v1/series answer: objects of string→string, no series
                         twice, each with __name__; prints one canonical series a line,
                         sorted.
  vector FILE            an instant-query vector; prints "SERIES TS_MS VALUE" lines, sorted.
  scalar FILE            an instant-query scalar; prints "TS_MS VALUE".
  matrix FILE START END STEP MODEL END_OF_DATA
                         a range-query answer: resultType matrix, every timestamp a
                         JSON number on the grid START + k*STEP (ms) inside [START, END],
                         strictly increasing, values JSON strings; and the content the
                         data set implies for MODEL (see model()). Prints a summary; on
                         a mismatch prints "expected …, got …" and exits 1.
  error FILE             a Prometheus error answer: exactly status/errorType/error (all
                         strings, error non-empty); prints "errorType: error".
  get FILE PATH          prints the value at PATH (keys and indexes joined by "."), as
                         JSON when it is not a string.

Exit status 0 when the answer is well-formed (and matches), 1 otherwise with the reason
on stdout (the test prints it as "expected …, got …").
"""
import json
import math
import re
import sys

STEP_S = 15  # one sample every 15 s, Grafana's default scrape interval
SPAN_S = 3600
LOOKBACK_S = 300  # Prometheus' default lookback delta, window [t-5m, t]

# gf_temp_celsius: (site, room, i); value at sample k = i*1000 + k/4 (exact in binary,
# so sums compare exactly).
TEMP = [("berlin", "r1", 1), ("berlin", "r2", 2), ("paris", "r1", 3)]
# gf_requests_total: counters (job, instance, code, increase per sample).
REQS = [("api", "a:9100", "200", 1.5), ("api", "a:9100", "500", 0.15), ("db", "b:9100", "200", 3.0)]
# gf_up: (job, instance, value)
UP = [("api", "a:9100", 1), ("db", "b:9100", 0)]

PROM_FLOAT = re.compile(r"^(NaN|[+-]Inf|-?[0-9]+(\.[0-9]+)?(e[+-][0-9]+)?)$")


MAYBE = object()  # a model's "point may or may not be there"


class Bad(Exception):
    pass


def lp(end):
    base = end - SPAN_S
    out = []
    for k in range(SPAN_S // STEP_S + 1):
        ts = base + k * STEP_S
        for site, room, i in TEMP:
            out.append("gf_temp,room=%s,site=%s celsius=%s %d" % (room, site, repr(i * 1000 + k / 4), ts))
        for job, inst, code, inc in REQS:
            out.append("gf_requests,code=%s,instance=%s,job=%s total=%s %d" % (
                code, inst, job, repr(k * inc), ts))
        for job, inst, v in UP:
            out.append("gf,instance=%s,job=%s up=%d %d" % (inst, job, v, ts))
    # Label values JSON must escape: a space, a double quote, a non-ASCII letter.
    out.append('gf_http,city=z\u00fcrich,path=/a\\ b,q=say"hi" hits=7 %d' % end)
    return "\n".join(out) + "\n"


def load(path):
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except ValueError:
        raise Bad("a JSON body, got %r" % text[:300])


def success_data(v):
    if not isinstance(v, dict) or v.get("status") != "success" or "data" not in v:
        raise Bad('{"status":"success","data":…}, got %s' % json.dumps(v)[:400])
    extra = set(v) - {"status", "data", "warnings", "infos"}
    if extra:
        raise Bad("only status/data/warnings keys, got also %s" % sorted(extra))
    return v["data"]


def canon_metric(m):
    if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in m.items()):
        raise Bad("a metric object of string label values, got %s" % json.dumps(m))
    name = m.get("__name__", "")
    rest = ",".join("%s=%s" % (k, json.dumps(m[k], ensure_ascii=False)) for k in sorted(m) if k != "__name__")
    return "%s{%s}" % (name, rest)


def ts_ms(t, what):
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise Bad("%s: a JSON number timestamp, got %s" % (what, json.dumps(t)))
    return int(round(t * 1000))


def value_of(s, what):
    if not isinstance(s, str) or not PROM_FLOAT.match(s):
        raise Bad("%s: a value as a JSON string in Prometheus' float format, got %s" % (what, json.dumps(s)))
    return float(s.replace("Inf", "inf"))


def point(p, what):
    if not isinstance(p, list) or len(p) != 2:
        raise Bad("%s: a [timestamp, \"value\"] pair, got %s" % (what, json.dumps(p)))
    return ts_ms(p[0], what), value_of(p[1], what), p[1]


def cmd_labels(path):
    data = success_data(load(path))
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise Bad("data: a list of strings, got %s" % json.dumps(data)[:400])
    if data != sorted(set(data)):
        raise Bad("a sorted list without duplicates, got %s" % json.dumps(data, ensure_ascii=False))
    return ",".join(data)


def cmd_series(path):
    data = success_data(load(path))
    if not isinstance(data, list):
        raise Bad("data: a list of label sets, got %s" % json.dumps(data)[:400])
    lines = []
    for m in data:
        c = canon_metric(m)
        if "__name__" not in m:
            raise Bad("every series with __name__, got %s" % c)
        lines.append(c)
    if len(set(lines)) != len(lines):
        raise Bad("no series twice, got %s" % lines)
    return "\n".join(sorted(lines))


def result_of(path, want_type):
    data = success_data(load(path))
    if not isinstance(data, dict) or set(data) - {"resultType", "result", "stats"}:
        raise Bad('data: {"resultType":…,"result":…}, got %s' % json.dumps(data)[:400])
    if data.get("resultType") != want_type:
        raise Bad('resultType "%s", got %s' % (want_type, json.dumps(data.get("resultType"))))
    if want_type != "scalar" and not isinstance(data.get("result"), list):
        raise Bad("result: a list (never null), got %s" % json.dumps(data.get("result"))[:300])
    return data["result"]


def fmt_value(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() else repr(v)


def cmd_vector(path):
    lines = []
    for s in result_of(path, "vector"):
        if not isinstance(s, dict) or set(s) != {"metric", "value"}:
            raise Bad('each result {"metric":…,"value":…}, got %s' % json.dumps(s)[:300])
        t, v, _ = point(s["value"], canon_metric(s["metric"]))
        lines.append("%s %d %s" % (canon_metric(s["metric"]), t, fmt_value(v)))
    if len(set(l.split(" ")[0] for l in lines)) != len(lines):
        raise Bad("no series twice, got %s" % lines)
    return "\n".join(sorted(lines))


def cmd_scalar(path):
    r = result_of(path, "scalar")
    t, v, _ = point(r, "scalar")
    return "%d %s" % (t, fmt_value(v))


# ---- range-query models --------------------------------------------------------------
# Each returns {canonical series: function(t_ms) -> expected value, or None (no point),
# Ellipsis (a point, value not checked), MAYBE (presence not checked either)}.


def last_sample_k(t_ms, base_ms):
    """Index of the newest sample at or before t within the lookback, or None."""
    if t_ms < base_ms:
        return None
    k = min((t_ms - base_ms) // (STEP_S * 1000), SPAN_S // STEP_S)
    if t_ms - (base_ms + k * STEP_S * 1000) > LOOKBACK_S * 1000:
        return None
    return k


def model(name, end_of_data):
    base_ms = (end_of_data - SPAN_S) * 1000
    end_ms = end_of_data * 1000
    m = {}

    def temp_sum(members):
        """Sum of the gf_temp_celsius series numbered `members`, as a function of t."""
        def at(t):
            k = last_sample_k(t, base_ms)
            return None if k is None else sum(i * 1000 + k / 4 for i in members)
        return at

    if name == "temp_berlin":  # gf_temp_celsius{site="berlin"}
        for site, room, i in TEMP:
            if site == "berlin":
                m[canon_metric({"__name__": "gf_temp_celsius", "site": site, "room": room})] = temp_sum([i])
    elif name == "temp_sum_by_site":  # sum by (site) (gf_temp_celsius)
        for site in sorted(set(s for s, _, _ in TEMP)):
            m[canon_metric({"site": site})] = temp_sum([i for s, _, i in TEMP if s == site])
    elif name == "rate_by_job_1m":  # sum by(job) (rate(gf_requests_total[1m]))
        samples = [base_ms + k * STEP_S * 1000 for k in range(SPAN_S // STEP_S + 1)]
        for job in sorted(set(j for j, _, _, _ in REQS)):
            per_s = sum(inc / STEP_S for j, _, _, inc in REQS if j == job)

            def f(t, per_s=per_s):
                # Prometheus 2.x takes the window [t-1m, t] inclusive, 3.x (t-1m, t]:
                # where the two differ in having two samples, presence is not checked.
                n_incl = sum(1 for s in samples if t - 60000 <= s <= t)
                n_excl = sum(1 for s in samples if t - 60000 < s <= t)
                if n_incl < 2:
                    return None  # rate needs two samples
                if n_excl < 2:
                    return MAYBE
                if t - 60000 >= base_ms and t <= end_ms:
                    return per_s  # the window lies inside the data: no edge effects
                return Ellipsis  # at the data's edges: extrapolated, value not checked

            m[canon_metric({"job": job})] = f
    elif name == "scalar2":  # 1+1
        m[canon_metric({})] = lambda t: 2.0
    elif name == "none":  # a selector that matches nothing
        pass
    else:
        raise Bad("known model, got %r" % name)
    return m


def close(a, b):
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def cmd_matrix(path, start, end, step, model_name, end_of_data):
    start_ms, end_ms, step_ms = (int(round(float(x) * 1000)) for x in (start, end, step))
    result = result_of(path, "matrix")
    want = model(model_name, int(end_of_data))
    grid = list(range(start_ms, end_ms + 1, step_ms))
    got = {}
    for s in result:
        if not isinstance(s, dict) or set(s) != {"metric", "values"}:
            raise Bad('each result {"metric":…,"values":[…]}, got %s' % json.dumps(s)[:300])
        key = canon_metric(s["metric"])
        if key in got:
            raise Bad("no series twice, got %s twice" % key)
        if not isinstance(s["values"], list) or not s["values"]:
            raise Bad("%s: a non-empty values list, got %s" % (key, json.dumps(s["values"])[:200]))
        pts = [point(p, key) for p in s["values"]]
        for (a, _, _), (b, _, _) in zip(pts, pts[1:]):
            if b <= a:
                raise Bad("%s: strictly increasing timestamps, got %d then %d" % (key, a, b))
        got[key] = pts
    if sorted(got) != sorted(want):
        raise Bad("series %s, got %s" % (sorted(want), sorted(got)))
    npoints = 0
    for key, pts in sorted(got.items()):
        have = {t: (v, text) for t, v, text in pts}
        for t in have:
            if t not in grid:
                raise Bad("%s: every timestamp on the grid start+k*step (%d + k*%d ms) inside [%d, %d], got %d" % (
                    key, start_ms, step_ms, start_ms, end_ms, t))
        for t in grid:
            exp = want[key](t)
            if exp is MAYBE:
                continue
            if exp is None:
                if t in have:
                    raise Bad("%s @ %d ms: no point (no sample in the lookback), got %s" % (key, t, have[t][1]))
                continue
            if t not in have:
                what = "" if exp is Ellipsis else " with value %s" % fmt_value(exp)
                raise Bad("%s @ %d ms: a point%s, got none" % (key, t, what))
            if exp is not Ellipsis and not close(have[t][0], exp):
                raise Bad("%s @ %d ms: value %s, got %s" % (key, t, fmt_value(exp), have[t][1]))
        npoints += len(pts)
    return "%d series, %d points on the %d ms grid" % (len(got), npoints, step_ms)


def cmd_error(path):
    v = load(path)
    if not isinstance(v, dict) or set(v) != {"status", "errorType", "error"} or v["status"] != "error" or \
            not isinstance(v["errorType"], str) or not isinstance(v["error"], str) or not v["error"]:
        raise Bad('{"status":"error","errorType":str,"error":"…"}, got %s' % json.dumps(v)[:400])
    return "%s: %s" % (v["errorType"], v["error"])


def cmd_get(path, dotted):
    v = load(path)
    for part in dotted.split("."):
        if isinstance(v, list) and re.match(r"^-?[0-9]+$", part):
            v = v[int(part)] if -len(v) <= int(part) < len(v) else None
        elif isinstance(v, dict):
            v = v.get(part)
        else:
            v = None
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def main(argv):
    cmds = {"lp": (1, lambda a: lp(int(a[0])).rstrip("\n")), "labels": (1, lambda a: cmd_labels(a[0])),
            "series": (1, lambda a: cmd_series(a[0])), "vector": (1, lambda a: cmd_vector(a[0])),
            "scalar": (1, lambda a: cmd_scalar(a[0])), "matrix": (6, lambda a: cmd_matrix(*a)),
            "error": (1, lambda a: cmd_error(a[0])), "get": (2, lambda a: cmd_get(*a))}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][0]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        out = cmds[argv[1]][1](argv[2:])
    except Bad as e:
        print(str(e))
        return 1
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
