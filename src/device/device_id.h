/*
 * device_id.h — the device id rule of libstele-device (1..64 of [A-Za-z0-9._-], as in
 * frames and the registry), shared by the identity store and the key proofs. Internal to
 * src/device/.
 */
#ifndef STELE_DEVICE_DEVICE_ID_H
#define STELE_DEVICE_DEVICE_ID_H

#include <stdbool.h>
#include <stddef.h>

/* Longest device id: one length byte on the wire, and short enough to be a label. */
#define DEVICE_ID_MAX 64

static inline bool device__id_valid(const char *s, size_t n)
{
    if (!s || n == 0 || n > DEVICE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

#endif
