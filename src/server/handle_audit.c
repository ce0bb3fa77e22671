/*
 * handle_audit.c — GET /api/v1/audit (scope admin): the audit trail's events, filtered.
 *
 *   device=ID        subject "device:ID"          subject=S   exact subject
 *   action=A         exact; "device." or "device.*" matches the prefix
 *   actor=A          exact
 *   since=T until=T  RFC 3339, unix seconds, or a duration ago ("1h"); since ≤ time < until
 *   after=N          records after sequence N (the previous page's next_after)
 *   limit=N          default 1000, at most 10000 (larger asks are cut to it)
 *   order=desc       newest first; then before=N pages backwards (next_before)
 *
 * Answer: {"status":"success","data":[{"seq","time","actor","action","subject",
 * "outcome","details"}…],"next_after":N|null} — next_after is null when nothing more
 * matches. Only acknowledged records are listed, read from disk (stele_audit_list), so
 * a listing never waits for or blocks appends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "server/server_internal.h"

/* Default page: enough for an operator's screenful of history and then some. */
#define AUDIT_PAGE_DEFAULT 1000
/* Largest page: at worst ~3 KiB per event, a 30 MiB answer built in memory. */
#define AUDIT_PAGE_MAX 10000
/* Subject built from device=: "device:" plus a field's worth. */
#define AUDIT_SUBJECT_MAX (STELE_AUDIT_MAX_FIELD + 8)

typedef struct {
    json_t *data;
    size_t count, want; /* want = page size; one more is read to know whether more exist */
    uint64_t last_seq;  /* of the last event kept */
    bool more;
    bool oom;
} audit_page;

static int add_event(void *ctx, const stele_audit_event *e)
{
    audit_page *p = ctx;
    if (p->count == p->want) {
        p->more = true;
        return 1;
    }
    char when[40];
    stele_audit_time_format(e->time_ns, when, sizeof(when));
    json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "seq", (json_int_t)e->seq, "time", when,
                          "actor", e->actor, "action", e->action, "subject", e->subject, "outcome",
                          e->outcome, "details", e->details);
    if (!o || json_array_append_new(p->data, o) != 0) {
        p->oom = true;
        return 1;
    }
    p->count++;
    p->last_seq = e->seq;
    return 0;
}

static bool parse_u64(const char *text, uint64_t *out)
{
    if (!text || *text < '0' || *text > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static mhd_result bad(struct MHD_Connection *c, const char *message)
{
    return respond_prom_error(c, 400, "bad_data", message);
}

mhd_result handle_audit(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_ADMIN, true, &result))
        return result;
    if (!s->audit)
        return respond_prom_error(c, 503, "unavailable",
                                  "this server has no audit trail open; check its start-up log");
    stele_audit_filter f = {0};
    char subject[AUDIT_SUBJECT_MAX], action[STELE_AUDIT_MAX_FIELD + 1];
    const char *device = request_param(c, r, "device");
    const char *subject_param = request_param(c, r, "subject");
    const char *action_param = request_param(c, r, "action");
    const char *since = request_param(c, r, "since");
    const char *until = request_param(c, r, "until");
    const char *after = request_param(c, r, "after");
    const char *before = request_param(c, r, "before");
    const char *limit = request_param(c, r, "limit");
    const char *order = request_param(c, r, "order");
    int64_t now = clock_wall_ns();
    uint64_t page = AUDIT_PAGE_DEFAULT;

    if (device && subject_param)
        return bad(c, "give device= or subject=, not both");
    if (device) {
        if (!*device || strlen(device) > STELE_AUDIT_MAX_FIELD)
            return bad(c, "device= must name a device id");
        snprintf(subject, sizeof(subject), "device:%s", device);
        f.subject = subject;
    } else if (subject_param) {
        f.subject = subject_param;
    }
    if (action_param) {
        size_t len = strlen(action_param);
        if (len == 0 || len > STELE_AUDIT_MAX_FIELD)
            return bad(c, "action= must name an action, or a prefix such as device.");
        snprintf(action, sizeof(action), "%s", action_param);
        bool star = action[len - 1] == '*';
        if (star)
            action[--len] = '\0';
        if (len > 0 && (star || action[len - 1] == '.'))
            f.action_prefix = action;
        else if (len > 0)
            f.action = action;
    }
    f.actor = request_param(c, r, "actor");
    if (since && stele_audit_time_parse(since, now, &f.since_ns) != 0)
        return bad(c, "invalid since: use RFC 3339, unix seconds, or a duration ago like 1h");
    if (until && stele_audit_time_parse(until, now, &f.until_ns) != 0)
        return bad(c, "invalid until: use RFC 3339, unix seconds, or a duration ago like 1h");
    if (after && !parse_u64(after, &f.after_seq))
        return bad(c, "invalid after: a sequence number (next_after of the previous page)");
    if (before && (!parse_u64(before, &f.before_seq) || f.before_seq == 0))
        return bad(c, "invalid before: a sequence number above 0");
    if (limit && (!parse_u64(limit, &page) || page == 0))
        return bad(c, "invalid limit: a number from 1 to 10000");
    if (page > AUDIT_PAGE_MAX)
        page = AUDIT_PAGE_MAX;
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0)
        return bad(c, "invalid order: asc (oldest first, the default) or desc");
    f.newest_first = order && !strcmp(order, "desc");
    f.limit = (size_t)page + 1;

    audit_page p = {.data = json_array(), .want = (size_t)page};
    if (!p.data)
        return respond_prom_error(c, 503, "unavailable", "out of memory");
    int rc = stele_audit_list(s->audit, &f, add_event, &p);
    if (rc || p.oom) {
        json_decref(p.data);
        if (rc == -EBADMSG)
            return respond_prom_error(c, 500, "internal",
                                      "the audit trail is damaged; run `stele audit verify`");
        return respond_prom_error(c, 503, "unavailable",
                                  p.oom ? "out of memory" : "could not read the audit trail");
    }
    json_t *next = p.more ? json_integer((json_int_t)p.last_seq) : json_null();
    return respond_json(c, 200,
                        json_pack("{s:s,s:o,s:o}", "status", "success", "data", p.data,
                                  f.newest_first ? "next_before" : "next_after", next));
}
