/* layers.c - which decoder layers a command works on: the "10,14",
 * "8-12", "all" lists of generate, capture and vectors, and the lookup of a
 * layer in a file's list of layers (see model.h). */
#include "safesteer/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_layer_num(const char *s, const char *spec, int n_layers, int *out,
                           ss_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return ss_fail(err, "\"%s\": \"%s\" is not a layer number", spec, s);
    if (v < 0 || v >= n_layers)
        return ss_fail(err, "\"%s\": layer %ld out of range (model has layers 0..%d)",
                       spec, v, n_layers - 1);
    *out = (int)v;
    return 0;
}

int ss_layers_parse(const char *spec, int n_layers, int **layers, int *n, ss_error *err)
{
    *layers = NULL;
    *n = 0;
    uint8_t *mask = ss_calloc((size_t)n_layers, 1, err);
    char *copy = strdup(spec);
    if (!mask || !copy) {
        free(mask);
        free(copy);
        return ss_fail(err, "out of memory parsing layers \"%s\"", spec);
    }
    int rc = 0;
    if (!strcmp(spec, "all")) {
        memset(mask, 1, (size_t)n_layers);
    } else {
        char *save = NULL;
        for (char *it = strtok_r(copy, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save)) {
            char *dash = strchr(it, '-');
            int a, b;
            if (dash) {
                *dash = '\0';
                rc = parse_layer_num(it, spec, n_layers, &a, err) ||
                     parse_layer_num(dash + 1, spec, n_layers, &b, err);
                if (!rc && b < a)
                    rc = ss_fail(err, "\"%s\": range %d-%d is reversed", spec, a, b);
            } else {
                rc = parse_layer_num(it, spec, n_layers, &a, err);
                b = a;
            }
            for (int l = a; !rc && l <= b; l++)
                mask[l] = 1;
        }
    }
    int count = 0;
    for (int l = 0; l < n_layers; l++)
        count += mask[l];
    if (!rc && count == 0)
        rc = ss_fail(err, "\"%s\" selects no layer", spec);
    if (!rc && !(*layers = ss_malloc((size_t)count * sizeof(int), err)))
        rc = -1;
    if (!rc)
        for (int l = 0; l < n_layers; l++)
            if (mask[l])
                (*layers)[(*n)++] = l;
    free(mask);
    free(copy);
    return rc ? -1 : 0;
}

int ss_layer_index(const int32_t *layers, int n, int layer, const char *sep, char *list,
                   size_t cap)
{
    size_t o = 0;
    list[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (layers[i] == layer)
            return i;
        if (o < cap)
            o += (size_t)snprintf(list + o, cap - o, "%s%d", i ? sep : "", (int)layers[i]);
    }
    return -1;
}
