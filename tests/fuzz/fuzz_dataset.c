/* fuzz_dataset.c - JSONL and CSV prompt sets (ss_dataset_load).  Input: one
 * byte (bit 0: CSV, else JSONL; bits 1-4: which of id, category, label,
 * response are named explicitly), then the file.  Oracle: no accepted file
 * holds a NUL byte (text files do not); an accepted set written back in the
 * same format (every field quoted) loads again to the same records. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safesteer/dataset.h"

static void put_csv_field(FILE *f, const char *s, int last)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputs(last ? "\"\n" : "\",", f);
}

/* The records as FORMAT again, fields under their configured names. */
static char *write_back(const ss_dataset *d, const ss_dataset_fields *fl, int csv, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    const char *names[5] = {fl->prompt, fl->id, fl->category, fl->label, fl->response};
    if (csv)
        for (int k = 0; k < 5; k++)
            put_csv_field(f, names[k], k == 4);
    for (int i = 0; i < d->n; i++) {
        const ss_record *r = &d->rec[i];
        const char *vals[5] = {r->prompt, r->id, r->category, r->label,
                               r->response ? r->response : ""};
        if (csv) {
            for (int k = 0; k < 5; k++)
                put_csv_field(f, vals[k], k == 4);
            continue;
        }
        json_t *o = json_object();
        for (int k = 0; k < 5; k++)
            if (k < 4 || r->response)
                json_object_set_new(o, names[k], json_string(vals[k]));
        char *line = json_dumps(o, JSON_COMPACT);
        if (!line)
            fuzz_reject("record %d holds a string jansson cannot write (not UTF-8?)", i);
        fprintf(f, "%s\n", line);
        free(line);
        json_decref(o);
    }
    fclose(f);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int csv = data[0] & 1;
    ss_dataset_fields fl;
    ss_dataset_fields_default(&fl);
    fl.explicit_id = data[0] >> 1 & 1;
    fl.explicit_category = data[0] >> 2 & 1;
    fl.explicit_label = data[0] >> 3 & 1;
    fl.explicit_response = data[0] >> 4 & 1;
    const char *path = fuzz_write(csv ? "prompts.csv" : "prompts.jsonl", data + 1, size - 1);
    ss_error err;
    ss_dataset *d;
    if (ss_dataset_load(path, &fl, &d, &err)) {
        fuzz_refused(&err, path);
        return 0;
    }
    if (memchr(data + 1, 0, size - 1))
        fuzz_reject("a prompt file holding a NUL byte accepted");
    for (int i = 0; i < d->n; i++)
        if (!d->rec[i].prompt || !d->rec[i].id || !d->rec[i].category || !d->rec[i].label ||
            (fl.explicit_response && !d->rec[i].response))
            fuzz_reject("record %d accepted without a required field", i);
    size_t len;
    char *again = write_back(d, &fl, csv, &len);
    const char *path2 = fuzz_write(csv ? "again.csv" : "again.jsonl", again, len);
    free(again);
    ss_dataset *d2;
    if (ss_dataset_load(path2, &fl, &d2, &err))
        fuzz_reject("the records written back do not load: %s", err.msg);
    if (d2->n != d->n)
        fuzz_reject("%d records written back load as %d", d->n, d2->n);
    for (int i = 0; i < d->n; i++) {
        const ss_record *a = &d->rec[i], *b = &d2->rec[i];
        if (strcmp(a->prompt, b->prompt) || strcmp(a->id, b->id) ||
            strcmp(a->category, b->category) || strcmp(a->label, b->label) ||
            (a->response && (!b->response || strcmp(a->response, b->response))))
            fuzz_reject("record %d (line %d) changes when written back", i, a->line);
    }
    ss_dataset_free(d2);
    ss_dataset_free(d);
    return 0;
}
