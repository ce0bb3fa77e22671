"""export_norm.py — reads a /api/v1/export answer (JSON lines) on stdin and prints one
canonical line per point, sorted:  NAME{k="v",...} TS_MS VALUE

Used by lib.sh's export_points so tests compare exports as plain text. Labels are
sorted by name and printed with json.dumps quoting; integral values print as integers,
others as Python's shortest repr (equal text <=> equal float64); "NaN"/"+Inf"/"-Inf"
print as they came. Exits 1 with the reason on stdout when the export is malformed:
not JSON, missing fields, values/timestamps of different or zero length, timestamps not
strictly increasing inside a series, or the same series on two lines.
"""
import json
import sys


def fmt_value(v):
    if isinstance(v, str):
        if v in ("NaN", "+Inf", "-Inf"):
            return v
        raise ValueError("value %r is a string other than NaN/+Inf/-Inf" % v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("value %r is not a number" % (v,))
    f = float(v)
    if f.is_integer() and abs(f) < 2**63:
        return str(int(f))
    return repr(f)


def main():
    out = []
    seen = set()
    for n, raw in enumerate(sys.stdin.read().split("\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            metric, values, stamps = obj["metric"], obj["values"], obj["timestamps"]
            if not isinstance(metric, dict) or "__name__" not in metric:
                raise ValueError("metric has no __name__")
            if not isinstance(values, list) or not isinstance(stamps, list):
                raise ValueError("values/timestamps are not arrays")
            if len(values) != len(stamps):
                raise ValueError("%d values but %d timestamps" % (len(values), len(stamps)))
            if not values:
                raise ValueError("a series with no points")
            name = metric["__name__"]
            labels = ",".join(
                "%s=%s" % (k, json.dumps(metric[k], ensure_ascii=False))
                for k in sorted(metric) if k != "__name__")
            key = "%s{%s}" % (name, labels)
            if key in seen:
                raise ValueError("series %s appears on two lines" % key)
            seen.add(key)
            prev = None
            for ts, v in zip(stamps, values):
                if not isinstance(ts, int) or isinstance(ts, bool):
                    raise ValueError("timestamp %r is not an integer" % (ts,))
                if prev is not None and ts <= prev:
                    raise ValueError("timestamps not strictly increasing (%d after %d)" % (ts, prev))
                prev = ts
                out.append("%s %d %s" % (key, ts, fmt_value(v)))
        except Exception as e:  # noqa: BLE001 — every problem is a malformed export
            print("export line %d: %s: %.300s" % (n, e, raw))
            return 1
    out.sort()
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
