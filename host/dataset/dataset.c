/* dataset.c - prompt sets from JSONL and CSV files. */
#include "safesteer/dataset.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ss_dataset_fields_default(ss_dataset_fields *f)
{
    memset(f, 0, sizeof *f);
    f->prompt = "prompt";
    f->id = "id";
    f->category = "category";
    f->label = "label";
    f->response = "response";
}

int ss_dataset_fields_parse(char *spec, ss_dataset_fields *f, ss_error *err)
{
    char *save = NULL;
    for (char *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1])
            return ss_fail(err, "fields: \"%s\" is not KEY=NAME", item);
        *eq = '\0';
        const char *name = eq + 1;
        if (!strcmp(item, "prompt"))
            f->prompt = name;
        else if (!strcmp(item, "id"))
            f->id = name, f->explicit_id = 1;
        else if (!strcmp(item, "category"))
            f->category = name, f->explicit_category = 1;
        else if (!strcmp(item, "label"))
            f->label = name, f->explicit_label = 1;
        else if (!strcmp(item, "response"))
            f->response = name, f->explicit_response = 1;
        else
            return ss_fail(err, "fields: unknown key \"%s\" (expected prompt, id, category, "
                                "label or response)", item);
    }
    return 0;
}

static void free_record(ss_record *r)
{
    free(r->prompt);
    free(r->id);
    free(r->category);
    free(r->label);
    free(r->response);
}

void ss_dataset_free(ss_dataset *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n; i++)
        free_record(&d->rec[i]);
    free(d->rec);
    free(d);
}

static char *dup_str(const char *s, size_t len, ss_error *err)
{
    char *o = ss_malloc(len + 1, err);
    if (o) {
        memcpy(o, s, len);
        o[len] = '\0';
    }
    return o;
}

/* Appends a zeroed record to d (grown geometrically). */
static ss_record *new_record(ss_dataset *d, int *cap, ss_error *err)
{
    if (d->n == *cap) {
        int nc = *cap ? *cap * 2 : 256;
        ss_record *nr = realloc(d->rec, (size_t)nc * sizeof *nr);
        if (!nr) {
            ss_fail(err, "%s: out of memory at record %d", d->path, d->n);
            return NULL;
        }
        d->rec = nr;
        *cap = nc;
    }
    ss_record *r = &d->rec[d->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* Fills the fields every format shares once prompt, id, ... are known:
 * missing optional fields get their defaults. */
static int finish_record(const ss_dataset *d, ss_record *r, int index, ss_error *err)
{
    if (!r->id) {
        char buf[32];
        snprintf(buf, sizeof buf, "row-%d", index);
        r->id = dup_str(buf, strlen(buf), err);
    }
    if (!r->category)
        r->category = dup_str("", 0, err);
    if (!r->label)
        r->label = dup_str("", 0, err);
    if (!r->id || !r->category || !r->label)
        return ss_fail_context(err, "%s:%d", d->path, r->line);
    return 0;
}

/* ---------------------------------------------------------------- JSONL */

/* Copies obj[name] into *dst: strings as is, numbers formatted.  A missing
 * field is an error only when required. */
static int json_field(const ss_dataset *d, int line, json_t *obj, const char *name,
                      int required, char **dst, ss_error *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) {
        if (required)
            return ss_fail(err, "%s:%d: field \"%s\" is missing", d->path, line, name);
        return 0;
    }
    char buf[64];
    if (json_is_string(v)) {
        *dst = dup_str(json_string_value(v), json_string_length(v), err);
    } else if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        *dst = dup_str(buf, strlen(buf), err);
    } else if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        *dst = dup_str(buf, strlen(buf), err);
    } else if (json_is_boolean(v)) {
        *dst = dup_str(json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5, err);
    } else {
        return ss_fail(err, "%s:%d: field \"%s\" is a JSON %s, expected a string", d->path,
                       line, name, json_is_object(v) ? "object" : "array");
    }
    return *dst ? 0 : ss_fail_context(err, "%s:%d", d->path, line);
}

static int load_jsonl(ss_dataset *d, char *buf, size_t len, const ss_dataset_fields *f,
                      ss_error *err)
{
    int cap = 0, line = 0;
    char *p = buf, *end = buf + len;
    while (p < end) {
        line++;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        size_t k = 0;
        while (k < n && strchr(" \t\r", p[k]))
            k++;
        if (k < n) {
            json_error_t je;
            json_t *obj = json_loadb(p, n, 0, &je);
            if (!obj)
                return ss_fail(err, "%s:%d: invalid JSON at column %d: %s", d->path, line,
                               je.column, je.text);
            if (!json_is_object(obj)) {
                json_decref(obj);
                return ss_fail(err, "%s:%d: expected a JSON object per line", d->path, line);
            }
            ss_record *r = new_record(d, &cap, err);
            int rc = r ? 0 : -1;
            if (r) {
                r->line = line;
                rc = json_field(d, line, obj, f->prompt, 1, &r->prompt, err) ||
                     json_field(d, line, obj, f->id, f->explicit_id, &r->id, err) ||
                     json_field(d, line, obj, f->category, f->explicit_category, &r->category,
                                err) ||
                     json_field(d, line, obj, f->label, f->explicit_label, &r->label, err) ||
                     json_field(d, line, obj, f->response, f->explicit_response, &r->response,
                                err) ||
                     finish_record(d, r, d->n - 1, err);
            }
            json_decref(obj);
            if (rc)
                return -1;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* ---------------------------------------------------------------- CSV */

typedef struct {
    char **fields;   /* [n] */
    int n, cap;
    int line;        /* line where the row starts */
} csv_row;

static void csv_row_clear(csv_row *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->fields[i]);
    r->n = 0;
}

static int csv_push(csv_row *r, const char *s, size_t len, int quoted, ss_error *err)
{
    if (r->n == r->cap) {
        int nc = r->cap ? r->cap * 2 : 16;
        char **nf = realloc(r->fields, (size_t)nc * sizeof *nf);
        if (!nf)
            return ss_fail(err, "out of memory in a CSV row");
        r->fields = nf;
        r->cap = nc;
    }
    char *v = ss_malloc(len + 1, err);
    if (!v)
        return -1;
    /* unescape "" inside a quoted field */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        v[o++] = s[i];
        if (quoted && s[i] == '"' && i + 1 < len && s[i + 1] == '"')
            i++;
    }
    v[o] = '\0';
    r->fields[r->n++] = v;
    return 0;
}

/* Parses one row starting at *pp (RFC 4180; CRLF or LF ends a row; quoted
 * fields may hold commas, quotes ("") and newlines).  *line counts lines. */
static int csv_next_row(const char *path, const char **pp, const char *end, int *line,
                        csv_row *row, ss_error *err)
{
    const char *p = *pp;
    csv_row_clear(row);
    row->line = *line;
    for (;;) {
        const char *s;
        size_t len;
        if (p < end && *p == '"') {
            int start_line = *line;
            s = ++p;
            for (;;) {
                if (p >= end)
                    return ss_fail(err, "%s:%d: quoted field never closed", path, start_line);
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        p += 2;
                        continue;
                    }
                    break;
                }
                if (*p == '\n')
                    (*line)++;
                p++;
            }
            len = (size_t)(p - s);
            p++; /* closing quote */
            if (p < end && *p != ',' && *p != '\n' && *p != '\r')
                return ss_fail(err, "%s:%d: unexpected character '%c' after a quoted field "
                                    "(column %d)", path, *line, *p, row->n + 1);
            if (csv_push(row, s, len, 1, err) < 0)
                return -1;
        } else {
            s = p;
            while (p < end && *p != ',' && *p != '\n' && *p != '\r')
                p++;
            if (csv_push(row, s, (size_t)(p - s), 0, err) < 0)
                return -1;
        }
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '\r')
            p++;
        if (p < end && *p == '\n')
            p++;
        (*line)++;
        break;
    }
    *pp = p;
    return 0;
}

static int csv_col(char **hdr, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(hdr[i], name))
            return i;
    return -1;
}

static int csv_pick(const ss_dataset *d, const csv_row *row, int col, const char *name,
                    char **dst, ss_error *err)
{
    if (col < 0)
        return 0;
    if (col >= row->n)
        return ss_fail(err, "%s:%d: row has %d fields, field \"%s\" (column %d) is missing",
                       d->path, row->line, row->n, name, col + 1);
    *dst = dup_str(row->fields[col], strlen(row->fields[col]), err);
    return *dst ? 0 : -1;
}

static int load_csv(ss_dataset *d, const char *buf, size_t len, const ss_dataset_fields *f,
                    ss_error *err)
{
    const char *p = buf, *end = buf + len;
    if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3))
        p += 3; /* UTF-8 byte order mark */
    int line = 1, rc = -1, cap = 0;
    csv_row hdr = {0}, row = {0};
    if (p >= end) {
        ss_fail(err, "%s: empty CSV file (no header row)", d->path);
        goto out;
    }
    if (csv_next_row(d->path, &p, end, &line, &hdr, err) < 0)
        goto out;
    int c_prompt = csv_col(hdr.fields, hdr.n, f->prompt);
    int c_id = csv_col(hdr.fields, hdr.n, f->id);
    int c_cat = csv_col(hdr.fields, hdr.n, f->category);
    int c_label = csv_col(hdr.fields, hdr.n, f->label);
    int c_resp = csv_col(hdr.fields, hdr.n, f->response);
    const struct { int col, expl; const char *name; } need[] = {
        {c_prompt, 1, f->prompt}, {c_id, f->explicit_id, f->id},
        {c_cat, f->explicit_category, f->category}, {c_label, f->explicit_label, f->label},
        {c_resp, f->explicit_response, f->response}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (need[i].col < 0 && need[i].expl) {
            ss_fail(err, "%s:1: header has no column \"%s\"", d->path, need[i].name);
            goto out;
        }
    while (p < end) {
        if (csv_next_row(d->path, &p, end, &line, &row, err) < 0)
            goto out;
        if (row.n == 1 && !row.fields[0][0])
            continue; /* blank line */
        if (row.n != hdr.n) {
            ss_fail(err, "%s:%d: row has %d fields, the header has %d", d->path, row.line,
                    row.n, hdr.n);
            goto out;
        }
        ss_record *r = new_record(d, &cap, err);
        if (!r)
            goto out;
        r->line = row.line;
        if (csv_pick(d, &row, c_prompt, f->prompt, &r->prompt, err) ||
            csv_pick(d, &row, c_id, f->id, &r->id, err) ||
            csv_pick(d, &row, c_cat, f->category, &r->category, err) ||
            csv_pick(d, &row, c_label, f->label, &r->label, err) ||
            csv_pick(d, &row, c_resp, f->response, &r->response, err) ||
            finish_record(d, r, d->n - 1, err))
            goto out;
    }
    rc = 0;
out:
    csv_row_clear(&hdr);
    csv_row_clear(&row);
    free(hdr.fields);
    free(row.fields);
    return rc;
}

/* ---------------------------------------------------------------- load */

/* A NUL byte would silently cut a field short (the records are C strings),
 * and no text file holds one. */
static int refuse_nul(const char *path, const char *buf, size_t len, ss_error *err)
{
    const char *nul = memchr(buf, 0, len);
    if (!nul)
        return 0;
    int line = 1;
    const char *start = buf;
    for (const char *p = buf; p < nul; p++)
        if (*p == '\n') {
            line++;
            start = p + 1;
        }
    return ss_fail(err, "%s:%d: NUL byte at column %d (not a text file)", path, line,
                   (int)(nul - start) + 1);
}

static int has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), e = strlen(ext);
    return n > e && !strcasecmp(path + n - e, ext);
}

int ss_dataset_load(const char *path, const ss_dataset_fields *f, ss_dataset **out,
                    ss_error *err)
{
    *out = NULL;
    int csv = has_ext(path, ".csv");
    if (!csv && !has_ext(path, ".jsonl") && !has_ext(path, ".json"))
        return ss_fail(err, "%s: unknown prompt-set format (expected .jsonl, .json or .csv)",
                       path);
    ss_dataset *d = ss_calloc(1, sizeof *d, err);
    if (!d)
        return -1;
    snprintf(d->path, sizeof d->path, "%s", path);
    char *buf = NULL;
    size_t len = 0;
    if (ss_read_file(path, &buf, &len, err) < 0) {
        free(d);
        return -1;
    }
    int rc = refuse_nul(path, buf, len, err);
    if (rc == 0)
        rc = csv ? load_csv(d, buf, len, f, err) : load_jsonl(d, buf, len, f, err);
    free(buf);
    if (rc == 0 && d->n == 0)
        rc = ss_fail(err, "%s: no records", path);
    if (rc < 0) {
        ss_dataset_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* ---------------------------------------------------------------- select */

void ss_dataset_select_default(ss_dataset_select *s)
{
    memset(s, 0, sizeof *s);
    s->limit = -1;
}

static int category_kept(const ss_dataset_select *s, const char *cat)
{
    if (s->n_categories == 0)
        return 1;
    for (int i = 0; i < s->n_categories; i++)
        if (!strcmp(s->categories[i], cat))
            return 1;
    return 0;
}

int ss_dataset_apply(ss_dataset *d, const ss_dataset_select *s, ss_error *err)
{
    if (s->offset < 0)
        return ss_fail(err, "offset %ld is negative", s->offset);
    int n = 0;
    for (int i = 0; i < d->n; i++) {
        if (category_kept(s, d->rec[i].category))
            d->rec[n++] = d->rec[i];
        else
            free_record(&d->rec[i]);
    }
    d->n = n;
    if (n == 0)
        return ss_fail(err, "%s: no record has category %s%s", d->path,
                       s->categories[0], s->n_categories > 1 ? " (or the others given)" : "");
    if (s->shuffle) {
        uint64_t st = s->seed;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(ss_splitmix64(&st) % (uint64_t)(i + 1));
            ss_record t = d->rec[i];
            d->rec[i] = d->rec[j];
            d->rec[j] = t;
        }
    }
    if (s->offset >= n)
        return ss_fail(err, "%s: offset %ld leaves nothing of %d records", d->path, s->offset,
                       n);
    long keep = n - s->offset;
    if (s->limit >= 0 && s->limit < keep)
        keep = s->limit;
    for (long i = 0; i < s->offset; i++)
        free_record(&d->rec[i]);
    for (long i = s->offset + keep; i < n; i++)
        free_record(&d->rec[i]);
    memmove(d->rec, d->rec + s->offset, (size_t)keep * sizeof *d->rec);
    d->n = (int)keep;
    if (d->n == 0)
        return ss_fail(err, "%s: limit 0 selects no records", d->path);
    if (s->need_response)
        for (int i = 0; i < d->n; i++)
            if (!d->rec[i].response)
                return ss_fail(err, "%s:%d: record \"%s\" has no response field (responses were "
                                    "asked for)", d->path, d->rec[i].line, d->rec[i].id);
    return 0;
}
