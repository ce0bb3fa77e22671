#!/usr/bin/env python3
"""compare.py — the client side of the PromQL differential test (10_promql_diff.sh).

Subcommands:
  load      writes gen_data.py's line protocol into Stele (POST /write?precision=ms in
            chunks; at the flush marker POST /api/v1/admin/flush, so the first part
            is read from blocks and the rest from the head).
  run       evaluates every query of queries.txt on two servers, the reference (real
            Prometheus) and the one under test (Stele), and compares the answers.
  selftest  checks the comparison itself on crafted answers (a differential test
            whose comparison is wrong passes everything).

Query file: one query per line, `instant QUERY` or `range QUERY`; blank lines and lines
starting with `#` are skipped. `instant` queries are evaluated at every time in
INSTANT_TIMES; `range` queries at those times too and over every window of
RANGE_WINDOWS (/api/v1/query_range). All times are fixed offsets from the data's end
(--end, a whole minute), some deliberately not on a step or second boundary, and
both servers get the same parameters. Instant queries go as GET, range queries as a
form POST, as Grafana sends them. Lines `series SELECTOR`, `labels [SELECTOR]` and
`values NAME [SELECTOR]` ask /api/v1/series, /api/v1/labels and
/api/v1/label/NAME/values (GET over the whole data window, and without one as a form
POST, GET for label values); their lists are compared as sets.

Two answers agree when: same HTTP status; same "status"; for errors the same
errorType (messages differ between implementations and are not compared); for success
the same resultType, the same set of series (label sets, compared exactly, __name__
included), per series the same timestamps (ms), and values equal within REL_TOL
relative (NaN equals NaN, +Inf equals +Inf). Order of series is not compared (a
Prometheus instant vector has none). Values must be JSON strings and timestamps JSON
numbers, as Prometheus sends them; duplicate series in one answer are an error.

Bounded: every request has a timeout and the whole run a deadline; checks not run
before the deadline count as failed. Standard library only.
"""
import argparse
import http.client
import json
import math
import re
import sys
import time
import urllib.parse

FLUSH_MARKER = "# stele-e2e: flush here"
REL_TOL = 1e-9

S = 1000  # ms
M = 60 * S
H = 60 * M
DATA_SPAN = 3 * H  # gen_data.py's DURATION

# (name, offset from END in ms)
INSTANT_TIMES = [
    ("END-3h1m", -DATA_SPAN - 1 * M),          # before the first sample: empty everywhere
    ("END-3h+2m30s", -DATA_SPAN + 150 * S),     # lookback only partly covered by data
    ("END-2h3m5.25s", -(2 * H + 3 * M + 5250)),  # not on a second boundary
    ("END-1h", -H),
    ("END-17m13s", -(17 * M + 13 * S)),
    ("END", 0),
    ("END+4m", 4 * M),                          # after the data, inside the 5 min lookback
    ("END+5m", 5 * M),                          # exactly 5 min after the last samples
    ("END+6m30s", 6 * M + 30 * S),              # beyond the lookback: stale everywhere
]
# (name, start offset, end offset, step as sent). Steps go as Grafana sends them (plain
# seconds) and as duration strings.
RANGE_WINDOWS = [
    ("[END-3h5m+7s, END+6m] step 60", -DATA_SPAN - 5 * M + 7 * S, 6 * M, "60"),
    ("[END-47m3.5s, END-2m] step 15s", -(47 * M + 3500), -2 * M, "15s"),
    ("[END-3h+13s, END] step 5m", -DATA_SPAN + 13 * S, 0, "5m"),
    ("[END-40m, END+10m] step 30 (on sample times)", -40 * M, 10 * M, "30"),
    # On bucket boundaries of the downsampling tiers (SPEC §5: 1m, 1h), where a store
    # could answer *_over_time from buckets — and a window [t-1h, t] that includes its
    # left end (Prometheus 2.x) holds one sample more than the hour's bucket.
    ("[END-3h, END] step 1h (tier-aligned)", -DATA_SPAN, 0, "1h"),
    ("[END-2h, END-1h] step 300 (tier-aligned)", -2 * H, -H, "300"),
]


# Metadata endpoints: `series SELECTOR`, `labels [SELECTOR]`, `values NAME [SELECTOR]`.
META_KINDS = {"series": "/api/v1/series", "labels": "/api/v1/labels", "values": None}


# ------------------------------------------------------------------ HTTP

class Server:
    """One keep-alive connection to a server; reconnects once on a broken connection."""

    def __init__(self, name, url, token, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit("compare.py: %s URL must be http://host:port, got %r" % (name, url))
        self.name, self.host, self.port = name, u.hostname, u.port or 80
        self.token, self.timeout = token, timeout
        self.conn = None

    def request(self, method, path, body=None, ctype=None):
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Token " + self.token
        if ctype:
            headers["Content-Type"] = ctype
        last = None
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (OSError, http.client.HTTPException) as e:
                last = e
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        return 0, ("request failed: %s: %s" % (type(last).__name__, last)).encode()


def fmt_time(ms):
    sign = "-" if ms < 0 else ""
    return "%s%d.%03d" % (sign, abs(ms) // 1000, abs(ms) % 1000)


# ------------------------------------------------------------------ answers

class Shape(Exception):
    pass


def parse_value(v):
    if not isinstance(v, str):
        raise Shape("value %r is not a JSON string (Prometheus sends values as strings)" % (v,))
    try:
        return float(v)
    except ValueError:
        raise Shape("value %r is not a number" % v)


def parse_ts(t):
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise Shape("timestamp %r is not a JSON number" % (t,))
    return int(round(t * 1000))


def parse_pair(p):
    if not isinstance(p, list) or len(p) != 2:
        raise Shape("sample %r is not [timestamp, \"value\"]" % (p,))
    return parse_ts(p[0]), parse_value(p[1])


def label_key(metric):
    if not isinstance(metric, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in metric.items()):
        raise Shape("metric %r is not an object of string labels" % (metric,))
    return tuple(sorted(metric.items()))


def fmt_labels(key):
    if key == ("<scalar>",):
        return "<scalar>"
    d = dict(key)
    name = d.pop("__name__", "")
    return name + "{" + ",".join("%s=%s" % (k, json.dumps(v, ensure_ascii=False))
                                 for k, v in sorted(d.items())) + "}"


def normalize(status, body):
    """An answer as a comparable tuple:
       ("error", http_status, errorType) | ("success", http_status, resultType, {key: [(ms, v)]})
       | ("bad", http_status, reason)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ("bad", status, "body is not JSON: %r" % body[:200])
    if not isinstance(doc, dict):
        return ("bad", status, "body is not a JSON object")
    st = doc.get("status")
    if st == "error":
        return ("error", status, doc.get("errorType"))
    if st != "success":
        return ("bad", status, "status is %r, not success/error" % (st,))
    data = doc.get("data")
    if isinstance(data, list):  # /api/v1/series, /labels, /label/<name>/values
        items = {}
        for x in data:
            if isinstance(x, dict):
                try:
                    key = label_key(x)
                except Shape as e:
                    return ("bad", status, str(e))
            elif isinstance(x, str):
                key = (("<name or value>", x),)
            else:
                return ("bad", status, "list element %r is neither a label set nor a string" % (x,))
            if key in items:
                return ("bad", status, "%s listed twice" % fmt_labels(key))
            items[key] = [(0, 0.0)]
        return ("success", status, "list", items)
    if not isinstance(data, dict) or "resultType" not in data or "result" not in data:
        return ("bad", status, "data is not {resultType, result}")
    rtype, result = data["resultType"], data["result"]
    series = {}
    try:
        if rtype in ("scalar", "string"):
            if rtype == "string":
                if not isinstance(result, list) or len(result) != 2:
                    raise Shape("string result is not [t, \"s\"]")
                series[("<scalar>",)] = [(parse_ts(result[0]), result[1])]
            else:
                series[("<scalar>",)] = [parse_pair(result)]
        elif rtype in ("vector", "matrix"):
            if not isinstance(result, list):
                raise Shape("result is not a list")
            for s in result:
                if not isinstance(s, dict) or "metric" not in s:
                    raise Shape("series %r has no metric" % (s,))
                key = label_key(s["metric"])
                if key in series:
                    raise Shape("series %s appears twice" % fmt_labels(key))
                if rtype == "vector":
                    if "value" not in s:
                        raise Shape("vector element has no value")
                    series[key] = [parse_pair(s["value"])]
                else:
                    vals = s.get("values")
                    if not isinstance(vals, list) or not vals:
                        raise Shape("matrix series %s has no values" % fmt_labels(key))
                    pts = [parse_pair(p) for p in vals]
                    if any(a[0] >= b[0] for a, b in zip(pts, pts[1:])):
                        raise Shape("matrix series %s: timestamps not increasing" % fmt_labels(key))
                    series[key] = pts
        else:
            raise Shape("unknown resultType %r" % (rtype,))
    except Shape as e:
        return ("bad", status, str(e))
    return ("success", status, rtype, series)


def same_value(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    if a == b:
        return True
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def fmt_v(v):
    return v if isinstance(v, str) else repr(v)


def differ(exp, got):
    """None when the answers agree, else a one-line reason."""
    if exp[0] == "bad":
        return "reference answer is malformed (harness or reference problem): %s" % exp[2]
    if got[0] == "bad":
        return "malformed answer (HTTP %s): %s" % (got[1], got[2])
    if exp[1] != got[1]:
        return "HTTP status: expected %s, got %s" % (exp[1], got[1])
    if exp[0] != got[0]:
        return "status: expected %s, got %s" % (exp[0], got[0])
    if exp[0] == "error":
        if exp[2] != got[2]:
            return "errorType: expected %r, got %r" % (exp[2], got[2])
        return None
    if exp[2] != got[2]:
        return "resultType: expected %s, got %s" % (exp[2], got[2])
    es, gs = exp[3], got[3]
    only_e = sorted(set(es) - set(gs))
    only_g = sorted(set(gs) - set(es))
    if only_e or only_g:
        parts = []
        if only_e:
            parts.append("missing %d series: %s" % (len(only_e), ", ".join(fmt_labels(k) for k in only_e[:4])))
        if only_g:
            parts.append("unexpected %d series: %s" % (len(only_g), ", ".join(fmt_labels(k) for k in only_g[:4])))
        return "series differ (expected %d, got %d): %s" % (len(es), len(gs), "; ".join(parts))
    for key in sorted(es):
        ep, gp = es[key], gs[key]
        et, gt = [p[0] for p in ep], [p[0] for p in gp]
        if et != gt:
            missing = sorted(set(et) - set(gt))
            extra = sorted(set(gt) - set(et))
            return ("timestamps differ in %s (expected %d points, got %d): missing %s; unexpected %s"
                    % (fmt_labels(key), len(et), len(gt),
                       [fmt_time(t) for t in missing[:4]], [fmt_time(t) for t in extra[:4]]))
        for (t, a), (_, b) in zip(ep, gp):
            if not same_value(a, b):
                return "value differs in %s at t=%s: expected %s, got %s" % (
                    fmt_labels(key), fmt_time(t), fmt_v(a), fmt_v(b))
    return None


def nonempty(ans):
    return ans[0] == "success" and len(ans[3]) > 0


def trunc(b, n):
    s = b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
    return s if len(s) <= n else s[:n] + "…(%d bytes)" % len(s)


# ------------------------------------------------------------------ run

def read_queries(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, _, q = line.partition(" ")
            q = q.strip()
            if kind not in ("instant", "range", "series", "labels", "values") or \
                    (not q and kind != "labels"):
                raise SystemExit("compare.py: %s:%d: expected `instant|range QUERY`, `series SELECTOR`, "
                                 "`labels [SELECTOR]` or `values NAME [SELECTOR]`, got %r" % (path, n, line))
            out.append((n, kind, q))
    return out


def evaluations(kind, q, end_ms):
    """(what, method, path, params) of every request for one line of the query file."""
    if kind in META_KINDS:
        # Only the whole data window and no window at all (everything): for narrower
        # windows Prometheus answers per block/chunk, not per sample, so its answer
        # is an over-approximation that another store need not reproduce.
        if kind == "values":
            name, _, sel = q.partition(" ")
            path = "/api/v1/label/%s/values" % urllib.parse.quote(name, safe="")
        else:
            sel, path = q, META_KINDS[kind]
        base = [("match[]", sel.strip())] if sel.strip() else []
        window = [("start", fmt_time(end_ms - DATA_SPAN - 10 * M)), ("end", fmt_time(end_ms + 10 * M))]
        yield ("%s GET over [END-3h10m, END+10m]" % path, "GET", path, base + window)
        # /label/<name>/values is GET only in Prometheus 2.42; the others take a form POST.
        yield ("%s %s without start/end" % (path, "GET" if kind == "values" else "POST"),
               "GET" if kind == "values" else "POST", path, base)
        return
    for name, off in INSTANT_TIMES:
        t = end_ms + off
        yield ("instant @ %s (time=%s)" % (name, fmt_time(t)),
               "GET", "/api/v1/query", [("query", q), ("time", fmt_time(t))])
    if kind == "range":
        for name, so, eo, step in RANGE_WINDOWS:
            start, end = fmt_time(end_ms + so), fmt_time(end_ms + eo)
            yield ("range %s (start=%s end=%s step=%s)" % (name, start, end, step),
                   "POST", "/api/v1/query_range", [("query", q), ("start", start), ("end", end), ("step", step)])


def cmd_run(args):
    queries = read_queries(args.queries)
    if args.filter:
        rx = re.compile(args.filter)
        queries = [q for q in queries if rx.search(q[2])]
    ref = Server(args.expected_name, args.expected, args.expected_token, args.timeout)
    sut = Server(args.actual_name, args.actual, args.actual_token, args.timeout)
    end_ms = args.end * 1000
    deadline = time.monotonic() + args.deadline
    passed = failed = printed = 0
    checks_nonempty = 0
    failed_queries = {}
    empty_everywhere = []
    ref_errors = []
    report = open(args.report, "w", encoding="utf-8") if args.report else None

    def out(line, to_stdout):
        if to_stdout:
            print(line)
        if report:
            report.write(line + "\n")

    for lineno, kind, q in queries:
        shown = (kind + " " + q).strip() if kind in META_KINDS else q  # for the messages
        any_nonempty = False
        for what, method, path, params in evaluations(kind, q, end_ms):
            if time.monotonic() > deadline:
                failed += 1
                failed_queries.setdefault((lineno, shown), []).append(what + ": not run (deadline)")
                continue
            if method == "GET":
                full, body, ctype = path + "?" + urllib.parse.urlencode(params), None, None
            else:
                full, body = path, urllib.parse.urlencode(params)
                ctype = "application/x-www-form-urlencoded"
            es, eb = ref.request(method, full, body, ctype)
            gs, gb = sut.request(method, full, body, ctype)
            exp, got = normalize(es, eb), normalize(gs, gb)
            if exp[0] == "error":
                ref_errors.append((lineno, shown, what))
            any_nonempty = any_nonempty or nonempty(exp)
            checks_nonempty += nonempty(exp)
            why = differ(exp, got)
            if why is None:
                passed += 1
                continue
            failed += 1
            failed_queries.setdefault((lineno, shown), []).append(what + ": " + why)
            full_detail = printed < args.max_print
            printed += 1
            out("MISMATCH queries.txt:%d  %s" % (lineno, shown), True)
            out("  at:        %s" % what, True)
            out("  why:       %s" % why, True)
            out("  %-10s %s" % (ref.name + ":", trunc(eb, args.width)), full_detail)
            out("  %-10s %s" % (sut.name + ":", trunc(gb, args.width)), full_detail)
        if not any_nonempty:
            empty_everywhere.append((lineno, shown))
    if failed_queries:
        out("", True)
        out("FAILED QUERIES (%d of %d):" % (len(failed_queries), len(queries)), True)
        for (lineno, q), whats in sorted(failed_queries.items()):
            out("  queries.txt:%d  %s   [%d check(s) failed; first: %s]"
                % (lineno, q, len(whats), whats[0]), True)
    total = passed + failed
    print("coverage: %d checks, %d with a non-empty reference answer; %d of %d queries empty or "
          "errors everywhere%s" % (total, checks_nonempty, len(empty_everywhere), len(queries),
                                   (": " + "; ".join("%d:%s" % e for e in empty_everywhere))
                                   if args.verbose else ""))
    if args.verbose and ref_errors:
        print("reference errors: " + "; ".join("%d:%s" % e[:2] for e in ref_errors[::len(INSTANT_TIMES)]))
    out("RESULT passed=%d failed=%d" % (passed, failed), True)
    if report:
        report.close()
    return 0 if failed == 0 else 1


# ------------------------------------------------------------------ load

def cmd_load(args):
    srv = Server("stele", args.url, args.token, args.timeout)
    with open(args.lp, encoding="utf-8") as f:
        lines = f.read().split("\n")
    parts = [[]]
    for line in lines:
        if line == FLUSH_MARKER:
            parts.append([])
        elif line:
            parts[-1].append(line)
    if len(parts) != 2:
        raise SystemExit("compare.py load: expected exactly one flush marker in %s" % args.lp)
    written = 0
    for n, part in enumerate(parts):
        for i in range(0, len(part), args.chunk):
            body = ("\n".join(part[i:i + args.chunk]) + "\n").encode()
            st, rb = srv.request("POST", "/write?precision=ms", body, "text/plain; charset=utf-8")
            if st != 204:
                print("load: POST /write?precision=ms (lines %d..%d of part %d): expected 204, got %s: %s"
                      % (i + 1, i + len(part[i:i + args.chunk]), n + 1, st, trunc(rb, 400)))
                return 1
            written += len(part[i:i + args.chunk])
        if n == 0 and not args.no_flush:
            st, rb = srv.request("POST", "/api/v1/admin/flush", b"", None)
            if st // 100 != 2:
                print("load: POST /api/v1/admin/flush: expected 2xx, got %s: %s" % (st, trunc(rb, 400)))
                return 1
    print("load: wrote %d lines%s" % (written, "" if args.no_flush else ", flushed after part 1"))
    return 0


# ------------------------------------------------------------------ selftest

def cmd_selftest(_args):
    def ans(rtype, result, status="success", code=200):
        return normalize(code, json.dumps({"status": status, "data": {"resultType": rtype, "result": result}}))

    vec = lambda *items: ans("vector", [{"metric": m, "value": [t, v]} for m, t, v in items])
    mat = lambda *items: ans("matrix", [{"metric": m, "values": vs} for m, vs in items])
    a, b = {"__name__": "x", "k": "1"}, {"__name__": "x", "k": "2"}
    cases = [
        # (expected, got, agree?)
        (vec((a, 10, "1"), (b, 10, "2")), vec((b, 10, "2"), (a, 10, "1")), True),    # order free
        (vec((a, 10, "NaN")), vec((a, 10, "NaN")), True),
        (vec((a, 10, "+Inf")), vec((a, 10, "+Inf")), True),
        (vec((a, 10, "+Inf")), vec((a, 10, "-Inf")), False),
        (vec((a, 10, "NaN")), vec((a, 10, "0")), False),
        (vec((a, 10, "1")), vec((a, 10, "1.0000000000001")), True),                   # 1e-13 rel
        (vec((a, 10, "1")), vec((a, 10, "1.00001")), False),
        (vec((a, 10, "1e300")), vec((a, 10, "1.0000000000001e300")), True),
        (vec((a, 10, "0")), vec((a, 10, "1e-20")), False),
        (vec((a, 10, "1")), vec((a, 10.001, "1")), False),                          # timestamp
        (vec((a, 10.001, "1")), vec((a, 10.001, "1")), True),
        (vec((a, 10, "1")), vec((b, 10, "1")), False),                              # labels
        (vec((a, 10, "1")), vec(({"k": "1"}, 10, "1")), False),                     # __name__ kept
        (vec((a, 10, "1")), vec(), False),
        (vec(), vec(), True),
        (vec((a, 10, "1")), normalize(200, json.dumps({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": a, "value": [10, 1]}]}})), False),  # number value
        (vec((a, 10, "1")), normalize(200, json.dumps({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": a, "value": [10, "1"]}] * 2}})), False),  # dup
        (vec((a, 10, "1")), mat((a, [[10, "1"]])), False),                          # resultType
        (mat((a, [[10, "1"], [20, "2"]])), mat((a, [[10, "1"], [20, "2"]])), True),
        (mat((a, [[10, "1"], [20, "2"]])), mat((a, [[10, "1"]])), False),
        (mat((a, [[10, "1"], [20, "2"]])), mat((a, [[10, "1"], [20, "3"]])), False),
        (ans("scalar", [10, "NaN"]), ans("scalar", [10, "NaN"]), True),
        (ans("scalar", [10, "2"]), ans("scalar", [10, "3"]), False),
        (normalize(400, '{"status":"error","errorType":"bad_data","error":"x"}'),
         normalize(400, '{"status":"error","errorType":"bad_data","error":"other words"}'), True),
        (normalize(400, '{"status":"error","errorType":"bad_data","error":"x"}'),
         normalize(422, '{"status":"error","errorType":"execution","error":"x"}'), False),
        (normalize(400, '{"status":"error","errorType":"bad_data","error":"x"}'), vec(), False),
        (vec(), normalize(404, b"not found"), False),
        (normalize(200, '{"status":"success","data":["a","b"]}'),
         normalize(200, '{"status":"success","data":["b","a"]}'), True),
        (normalize(200, '{"status":"success","data":["a","b"]}'),
         normalize(200, '{"status":"success","data":["a"]}'), False),
        (normalize(200, '{"status":"success","data":[{"__name__":"x","k":"1"}]}'),
         normalize(200, '{"status":"success","data":[{"__name__":"x","k":"2"}]}'), False),
        (normalize(200, '{"status":"success","data":["a"]}'),
         normalize(200, '{"status":"success","data":["a","a"]}'), False),
    ]
    bad = 0
    for n, (e, g, agree) in enumerate(cases):
        why = differ(e, g)
        if (why is None) != agree:
            bad += 1
            print("selftest case %d: expected %s, got %s (%s)" % (n, "agree" if agree else "differ",
                                                                 "agree" if why is None else "differ", why))
    print("selftest: %d of %d cases right" % (len(cases) - bad, len(cases)))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--url", required=True)
    lp.add_argument("--token", required=True)
    lp.add_argument("--lp", required=True)
    lp.add_argument("--chunk", type=int, default=2000, help="lines per request")
    lp.add_argument("--no-flush", action="store_true")
    lp.add_argument("--timeout", type=float, default=30)
    rp = sub.add_parser("run")
    rp.add_argument("--expected", required=True, help="reference server URL (Prometheus)")
    rp.add_argument("--expected-name", default="prometheus")
    rp.add_argument("--expected-token", default="")
    rp.add_argument("--actual", required=True, help="server under test URL (Stele)")
    rp.add_argument("--actual-name", default="stele")
    rp.add_argument("--actual-token", default="")
    rp.add_argument("--queries", required=True)
    rp.add_argument("--end", type=int, required=True, help="the data's end, unix seconds")
    rp.add_argument("--deadline", type=float, default=150, help="seconds for the whole run")
    rp.add_argument("--timeout", type=float, default=15, help="seconds per request")
    rp.add_argument("--report", help="also write every mismatch in full to this file")
    rp.add_argument("--max-print", type=int, default=60, help="mismatches shown with both answers")
    rp.add_argument("--width", type=int, default=600, help="answer characters shown per mismatch")
    rp.add_argument("--filter", help="only queries matching this regular expression")
    rp.add_argument("--verbose", action="store_true")
    sub.add_parser("selftest")
    args = ap.parse_args()
    return {"run": cmd_run, "load": cmd_load, "selftest": cmd_selftest}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
