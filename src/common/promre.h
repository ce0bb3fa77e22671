/*
 * promre.h — Prometheus-style regular expressions on top of POSIX regex.
 *
 * Prometheus uses RE2, fully anchored. POSIX extended syntax covers most of what label
 * matchers use; this module translates the common RE2-only forms — a leading (?i),
 * non-capturing groups (?:…), the classes \d \w \s and their negations — and matches in
 * a UTF-8 locale so that `.` is one character, not one byte. Constructs POSIX cannot
 * express (lazy quantifiers, look-around, named groups) are refused with an error.
 */
#ifndef STELE_COMMON_PROMRE_H
#define STELE_COMMON_PROMRE_H

#include <locale.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    regex_t re;
    locale_t loc; /* UTF-8 locale used while compiling and matching */
    bool compiled;
} promre;

/* Compiles pattern anchored at both ends. 0, or -EINVAL with a message in err. */
int promre_compile(promre *r, const char *pattern, char *err, size_t errcap);
/* Whether s[0..len) matches as a whole. */
bool promre_match(const promre *r, const char *s, size_t len);
void promre_free(promre *r);

#endif
