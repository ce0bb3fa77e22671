/*
 * promre.c — RE2 → POSIX ERE translation and UTF-8 matching; see promre.h.
 */
#include "common/promre.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends s to out (bounded). */
static void put(char *out, size_t cap, size_t *n, const char *s)
{
    size_t l = strlen(s);
    if (*n + l < cap) {
        memcpy(out + *n, s, l);
        *n += l;
    } else {
        *n = cap; /* overflow marker */
    }
}

/* Translates an RE2 pattern to an anchored POSIX ERE. *icase for a leading (?i). */
static int translate(const char *in, char *out, size_t cap, bool *icase, char *err, size_t errcap)
{
    size_t n = 0;
    bool in_class = false;
    bool prev_quant = false; /* the previous element was a repetition operator */
    *icase = false;
    if (!strncmp(in, "(?i)", 4)) {
        *icase = true;
        in += 4;
    }
    put(out, cap, &n, "^(");
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            char e = *++p;
            const char *cls = NULL, *neg = NULL;
            /* RE2's Perl classes are ASCII-only. */
            switch (e) {
            case 'd':
                cls = "0-9";
                break;
            case 'D':
                neg = "0-9";
                break;
            case 'w':
                cls = "0-9A-Za-z_";
                break;
            case 'W':
                neg = "0-9A-Za-z_";
                break;
            case 's':
                cls = "\t\n\f\r ";
                break;
            case 'S':
                neg = "\t\n\f\r ";
                break;
            case 'p':
            case 'P': {
                /* Unicode classes, approximated by the UTF-8 locale's POSIX classes. */
                const char *name = p + 1;
                size_t nl = 1;
                if (*name == '{') {
                    const char *close = strchr(name, '}');
                    if (!close) {
                        snprintf(err, errcap, "missing } in \\p{...}");
                        return -EINVAL;
                    }
                    name++;
                    nl = (size_t)(close - name);
                }
                const char *posix = NULL;
                if ((nl == 1 && *name == 'L') || (nl == 6 && !strncmp(name, "Letter", 6)))
                    posix = "[:alpha:]";
                else if (nl == 2 && !strncmp(name, "Lu", 2))
                    posix = "[:upper:]";
                else if (nl == 2 && !strncmp(name, "Ll", 2))
                    posix = "[:lower:]";
                else if ((nl == 1 && *name == 'N') || (nl == 2 && !strncmp(name, "Nd", 2)))
                    posix = "[:digit:]";
                else if (nl == 1 && *name == 'P')
                    posix = "[:punct:]";
                else if (nl == 1 && *name == 'Z')
                    posix = "[:space:]";
                if (!posix) {
                    snprintf(err, errcap, "unsupported Unicode class \\%c{%.*s}", e, (int)nl, name);
                    return -EINVAL;
                }
                if (name[-1] == '{')
                    p = name + nl; /* at the closing brace */
                else
                    p = name;
                if (e == 'p')
                    cls = posix;
                else
                    neg = posix;
                break;
            }
            default:
                break;
            }
            if (cls || neg) {
                if (in_class && cls) {
                    put(out, cap, &n, cls);
                } else if (in_class) {
                    snprintf(err, errcap, "negated class \\%c inside [...] is not supported", e);
                    return -EINVAL;
                } else {
                    put(out, cap, &n, cls ? "[" : "[^");
                    put(out, cap, &n, cls ? cls : neg);
                    put(out, cap, &n, "]");
                }
                continue;
            }
            if (e == 'n' || e == 't') { /* RE2 escapes for control characters */
                char ctl[2] = {e == 'n' ? '\n' : '\t', 0};
                put(out, cap, &n, ctl);
                prev_quant = false;
                continue;
            }
            if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
                /* RE2 (and so Prometheus) refuses unknown escapes; glibc would give some
                 * of them (\< \> \b) other meanings. */
                snprintf(err, errcap, "invalid escape sequence \\%c", e);
                return -EINVAL;
            }
            prev_quant = false;
            /* An escaped punctuation character is itself (RE2). POSIX only defines
             * escapes of its special characters; for others glibc has extensions
             * (\< \> \`), so they are emitted unescaped. */
            char esc[3] = {'\\', e, 0};
            if (!strchr(".[]()*+?{}|^$\\", e)) {
                esc[0] = e;
                esc[1] = 0;
            }
            if (in_class) { /* POSIX brackets have no escapes: use the character */
                esc[0] = e;
                esc[1] = 0;
            }
            put(out, cap, &n, esc);
            continue;
        }
        if (in_class) {
            if (c == ']' && p[-1] != '[' && !(p[-1] == '^' && p[-2] == '['))
                in_class = false;
            char s[2] = {c, 0};
            put(out, cap, &n, s);
            continue;
        }
        if (c == '[') {
            in_class = true;
            prev_quant = false;
            put(out, cap, &n, "[");
            continue;
        }
        if (c == '(' && p[1] == '?') {
            if (p[2] == ':') {
                put(out, cap, &n, "(");
                p += 2;
                continue;
            }
            snprintf(err, errcap, "unsupported group syntax \"(?%c\" in regular expression", p[2]);
            return -EINVAL;
        }
        if ((c == '*' || c == '+' || c == '?' || c == '}') && p[1] == '?') {
            snprintf(err, errcap, "lazy quantifiers are not supported in regular expressions");
            return -EINVAL;
        }
        bool quant = c == '*' || c == '+' || c == '?' || c == '{';
        if (quant && prev_quant) {
            /* As Go's regexp: stacked repetitions such as a*+*+ are refused; glibc
             * would take seconds on them (a denial of service through match[]). */
            snprintf(err, errcap, "invalid nested repetition operator");
            return -EINVAL;
        }
        if (c == '{') {
            /* Copy the whole {m,n} and remember that a repetition ended here. */
            const char *close = strchr(p, '}');
            if (close) {
                for (; p <= close; p++) {
                    char s1[2] = {*p, 0};
                    put(out, cap, &n, s1);
                }
                p--;
                prev_quant = true;
                continue;
            }
        }
        prev_quant = quant;
        char s[2] = {c, 0};
        put(out, cap, &n, s);
    }
    put(out, cap, &n, ")$");
    if (n >= cap) {
        snprintf(err, errcap, "regular expression too long");
        return -EINVAL;
    }
    out[n] = '\0';
    return 0;
}

int promre_compile(promre *r, const char *pattern, char *err, size_t errcap)
{
    memset(r, 0, sizeof(*r));
    size_t cap = strlen(pattern) * 12 + 16;
    char *posix = malloc(cap);
    bool icase;
    if (!posix)
        return -ENOMEM;
    int rc = translate(pattern, posix, cap, &icase, err, errcap);
    if (rc) {
        free(posix);
        return rc;
    }
    r->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    locale_t old = r->loc ? uselocale(r->loc) : (locale_t)0;
    int re_rc = regcomp(&r->re, posix, REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0));
    if (r->loc)
        uselocale(old);
    free(posix);
    if (re_rc != 0) {
        char msg[128];
        regerror(re_rc, &r->re, msg, sizeof(msg));
        snprintf(err, errcap, "invalid regular expression: %s", msg);
        if (r->loc)
            freelocale(r->loc);
        r->loc = (locale_t)0;
        return -EINVAL;
    }
    r->compiled = true;
    return 0;
}

bool promre_match(const promre *r, const char *s, size_t len)
{
    char stackbuf[512];
    char *z = len < sizeof(stackbuf) ? stackbuf : malloc(len + 1);
    if (!z)
        return false;
    memcpy(z, s, len);
    z[len] = '\0';
    locale_t old = r->loc ? uselocale(r->loc) : (locale_t)0;
    bool match = regexec(&r->re, z, 0, NULL, 0) == 0;
    if (r->loc)
        uselocale(old);
    if (z != stackbuf)
        free(z);
    return match;
}

void promre_free(promre *r)
{
    if (r->compiled)
        regfree(&r->re);
    if (r->loc)
        freelocale(r->loc);
    memset(r, 0, sizeof(*r));
}
