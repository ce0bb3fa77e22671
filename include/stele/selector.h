/*
 * selector.h — parser for Prometheus series selectors, as used by match[] parameters:
 *
 *   metric_name
 *   metric_name{label="v", label!="v", label=~"re", label!~"re"}
 *   {__name__="m", label="v"}
 *
 * Strings may be "double-quoted", 'single-quoted' (with \\ \" \' \n \t \r \xHH escapes)
 * or `raw`. Like Prometheus, a selector must hold at least one matcher that does not
 * match the empty string, so it cannot select every series by accident.
 */
#ifndef STELE_SELECTOR_H
#define STELE_SELECTOR_H

#include <stddef.h>

#include "stele/tsdb.h"

#define STELE_SELECTOR_MAX_MATCHERS 32

typedef struct {
    stele_matcher matchers[STELE_SELECTOR_MAX_MATCHERS];
    size_t n;
    char *storage; /* owns the matcher strings */
} stele_selector;

/* Parses text (len bytes). 0, or -EINVAL with a message naming the position in err. */
int stele_selector_parse(const char *text, size_t len, stele_selector *sel, char *err,
                         size_t errcap);
void stele_selector_free(stele_selector *sel);

#endif
