/*
 * text.h — small text helpers shared by the HTTP handlers, the query result writer and
 * the parsers: hex digits and JSON string escaping (one implementation, so every JSON
 * Stele writes escapes the same way).
 */
#ifndef STELE_COMMON_TEXT_H
#define STELE_COMMON_TEXT_H

#include <stddef.h>
#include <stdio.h>

/* Value of a hex digit, or -1. */
static inline int hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Escapes s[0..n) as the inside of a JSON string (no quotes) into out, which needs room
 * for 6 × n bytes; returns the bytes written. Quotes, backslashes and control bytes are
 * escaped; other bytes are copied (label values are taken as UTF-8). */
static inline size_t json_escape_bytes(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            out[k++] = '\\';
            out[k++] = 'u';
            out[k++] = '0';
            out[k++] = '0';
            out[k++] = hex[c >> 4];
            out[k++] = hex[c & 15];
        } else {
            out[k++] = (char)c;
        }
    }
    return k;
}

#endif
