/*
 * selector.c — series selector parser; grammar in selector.h. A hand-written
 * recursive-descent scanner: selectors are short, and a precise message with the byte
 * position of the problem is worth more than generality here.
 */
#include "stele/selector.h"

#include <errno.h>
#include "common/promre.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/text.h"

typedef struct {
    const char *s;
    size_t len;
    size_t pos;
    char *out; /* string storage cursor */
    char *err;
    size_t errcap;
} scanner;

static int scan_error(scanner *sc, const char *what)
{
    snprintf(sc->err, sc->errcap, "parse error at char %zu: %s", sc->pos + 1, what);
    return -EINVAL;
}

static void skip_space(scanner *sc)
{
    while (sc->pos < sc->len && (sc->s[sc->pos] == ' ' || sc->s[sc->pos] == '\t' ||
                                 sc->s[sc->pos] == '\n' || sc->s[sc->pos] == '\r'))
        sc->pos++;
}

static bool is_name_start(char c, bool metric)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
}

static bool is_name_char(char c, bool metric)
{
    return is_name_start(c, metric) || (c >= '0' && c <= '9');
}

/* Copies an identifier into storage; returns it. */
static const char *scan_name(scanner *sc, bool metric)
{
    if (sc->pos >= sc->len || !is_name_start(sc->s[sc->pos], metric))
        return NULL;
    char *start = sc->out;
    while (sc->pos < sc->len && is_name_char(sc->s[sc->pos], metric))
        *sc->out++ = sc->s[sc->pos++];
    *sc->out++ = '\0';
    return start;
}

static int scan_string(scanner *sc, const char **value)
{
    if (sc->pos >= sc->len)
        return scan_error(sc, "expected a quoted string");
    char quote = sc->s[sc->pos];
    if (quote != '"' && quote != '\'' && quote != '`')
        return scan_error(sc, "expected a quoted string");
    sc->pos++;
    char *start = sc->out;
    for (;;) {
        if (sc->pos >= sc->len)
            return scan_error(sc, "unterminated string");
        char c = sc->s[sc->pos++];
        if (c == quote)
            break;
        if (c == '\\' && quote != '`') {
            if (sc->pos >= sc->len)
                return scan_error(sc, "unterminated escape");
            char e = sc->s[sc->pos++];
            switch (e) {
            case '\\':
            case '"':
            case '\'':
                c = e;
                break;
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'x': {
                int h = sc->pos + 1 < sc->len ? hex_digit_value(sc->s[sc->pos]) : -1;
                int l = h >= 0 ? hex_digit_value(sc->s[sc->pos + 1]) : -1;
                if (l < 0)
                    return scan_error(sc, "invalid \\x escape");
                c = (char)(h * 16 + l);
                sc->pos += 2;
                break;
            }
            default:
                return scan_error(sc, "unknown escape sequence in string");
            }
        }
        *sc->out++ = c;
    }
    *sc->out++ = '\0';
    *value = start;
    return 0;
}

static bool matches_empty(const stele_matcher *m)
{
    switch (m->type) {
    case STELE_MATCH_EQUAL:
        return m->value[0] == '\0';
    case STELE_MATCH_NOT_EQUAL:
        return m->value[0] != '\0';
    default: {
        promre re;
        char err[200];
        bool match = true; /* an invalid regex is reported when the selector is used */
        if (promre_compile(&re, m->value, err, sizeof(err)) == 0) {
            match = promre_match(&re, "", 0);
            promre_free(&re);
        }
        return m->type == STELE_MATCH_REGEX ? match : !match;
    }
    }
}

int stele_selector_parse(const char *text, size_t len, stele_selector *sel, char *err,
                         size_t errcap)
{
    memset(sel, 0, sizeof(*sel));
    /* Every string and name is no longer than the text itself, plus NULs. */
    sel->storage = malloc(2 * len + 2 * STELE_SELECTOR_MAX_MATCHERS + 16);
    if (!sel->storage)
        return -ENOMEM;
    scanner sc = {.s = text, .len = len, .out = sel->storage, .err = err, .errcap = errcap};
    int rc;
    skip_space(&sc);
    const char *metric = scan_name(&sc, true);
    if (metric) {
        sel->matchers[sel->n++] =
            (stele_matcher){.name = "__name__", .value = metric, .type = STELE_MATCH_EQUAL};
    }
    skip_space(&sc);
    if (sc.pos < sc.len && text[sc.pos] == '{') {
        sc.pos++;
        for (;;) {
            skip_space(&sc);
            if (sc.pos < sc.len && text[sc.pos] == '}') {
                sc.pos++;
                break;
            }
            const char *name = scan_name(&sc, false);
            if (!name) {
                rc = scan_error(&sc, "expected a label name");
                goto fail;
            }
            skip_space(&sc);
            stele_match_type type;
            if (sc.pos + 1 < sc.len && text[sc.pos] == '=' && text[sc.pos + 1] == '~') {
                type = STELE_MATCH_REGEX;
                sc.pos += 2;
            } else if (sc.pos + 1 < sc.len && text[sc.pos] == '!' && text[sc.pos + 1] == '=') {
                type = STELE_MATCH_NOT_EQUAL;
                sc.pos += 2;
            } else if (sc.pos + 1 < sc.len && text[sc.pos] == '!' && text[sc.pos + 1] == '~') {
                type = STELE_MATCH_NOT_REGEX;
                sc.pos += 2;
            } else if (sc.pos < sc.len && text[sc.pos] == '=') {
                type = STELE_MATCH_EQUAL;
                sc.pos++;
            } else {
                rc = scan_error(&sc, "expected one of =, !=, =~, !~");
                goto fail;
            }
            skip_space(&sc);
            const char *value;
            rc = scan_string(&sc, &value);
            if (rc)
                goto fail;
            if (sel->n == STELE_SELECTOR_MAX_MATCHERS) {
                rc = scan_error(&sc, "too many label matchers (at most 32)");
                goto fail;
            }
            sel->matchers[sel->n++] = (stele_matcher){.name = name, .value = value, .type = type};
            skip_space(&sc);
            if (sc.pos < sc.len && text[sc.pos] == ',') {
                sc.pos++;
                continue;
            }
            if (sc.pos < sc.len && text[sc.pos] == '}') {
                sc.pos++;
                break;
            }
            rc = scan_error(&sc, "expected , or } after a label matcher");
            goto fail;
        }
    }
    skip_space(&sc);
    if (sc.pos != sc.len) {
        rc = scan_error(&sc, "unexpected characters after the selector");
        goto fail;
    }
    bool selective = false;
    for (size_t i = 0; i < sel->n; i++)
        selective |= !matches_empty(&sel->matchers[i]);
    if (!selective) {
        snprintf(err, errcap, "vector selector must contain at least one non-empty matcher");
        rc = -EINVAL;
        goto fail;
    }
    return 0;
fail:
    stele_selector_free(sel);
    return rc;
}

void stele_selector_free(stele_selector *sel)
{
    free(sel->storage);
    sel->storage = NULL;
    sel->n = 0;
}
