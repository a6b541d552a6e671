/* test_dataset.c - JSONL/CSV prompt sets: fields, quoting, errors with
 * file:line, filters, offset/limit, seeded shuffle; the shared data sets. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/dataset.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ss_test_dataset_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static const char *write_tmp(const char *name, const char *body)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(body, f);
    fclose(f);
    return path;
}

static ss_dataset *load_ok(const char *path, const ss_dataset_fields *f)
{
    ss_dataset *d = NULL;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_dataset_load(path, f, &d, &err), 0, "%s", err.msg);
    return d;
}

TestSuite(dataset, .init = setup);

Test(dataset, jsonl_fields_and_defaults)
{
    const char *p = write_tmp("a.jsonl", "{\"prompt\":\"hi\",\"id\":7,\"category\":\"x\"}\n"
                                         "\n"
                                         "{\"prompt\":\"caf\\u00e9\",\"label\":\"safe\"}\n");
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d = load_ok(p, &f);
    cr_assert_eq(d->n, 2);
    cr_assert_str_eq(d->rec[0].id, "7");
    cr_assert_str_eq(d->rec[0].category, "x");
    cr_assert_str_eq(d->rec[0].label, "");
    cr_assert_null(d->rec[0].response);
    cr_assert_str_eq(d->rec[1].prompt, "caf\xc3\xa9");
    cr_assert_str_eq(d->rec[1].id, "row-1");
    cr_assert_eq(d->rec[1].line, 3);
    ss_dataset_free(d);
}

Test(dataset, jsonl_errors_name_file_line_field)
{
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d;
    ss_error err = {.msg = ""};
    const char *p = write_tmp("b.jsonl", "{\"prompt\":\"ok\"}\n{\"text\":\"no prompt\"}\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "b.jsonl:2") && strstr(err.msg, "\"prompt\""), "%s", err.msg);
    p = write_tmp("c.jsonl", "{\"prompt\":\"ok\"}\n{\"prompt\": [1]}\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "c.jsonl:2") && strstr(err.msg, "array"), "%s", err.msg);
    p = write_tmp("e.jsonl", "{\"prompt\":\"ok\"}\n{\"prompt\": \"x\",\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "e.jsonl:2") && strstr(err.msg, "invalid JSON"), "%s", err.msg);
    char spec[] = "id=uid";
    cr_assert_eq(ss_dataset_fields_parse(spec, &f, &err), 0);
    p = write_tmp("g.jsonl", "{\"prompt\":\"ok\",\"uid\":\"a\"}\n{\"prompt\":\"no uid\"}\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "g.jsonl:2") && strstr(err.msg, "\"uid\""), "%s", err.msg);
}

Test(dataset, csv_rfc4180_quoting_and_crlf)
{
    const char *p = write_tmp("q.csv", "goal,target,extra\r\n"
                                       "\"a, with comma\",\"say \"\"hi\"\"\",1\r\n"
                                       "\"two\nlines\",t,2\n"
                                       "plain,,3\r\n");
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    char spec[] = "prompt=goal,response=target,category=extra";
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_dataset_fields_parse(spec, &f, &err), 0, "%s", err.msg);
    ss_dataset *d = load_ok(p, &f);
    cr_assert_eq(d->n, 3);
    cr_assert_str_eq(d->rec[0].prompt, "a, with comma");
    cr_assert_str_eq(d->rec[0].response, "say \"hi\"");
    cr_assert_str_eq(d->rec[1].prompt, "two\nlines");
    cr_assert_eq(d->rec[1].line, 3);
    cr_assert_eq(d->rec[2].line, 5);
    cr_assert_str_eq(d->rec[2].prompt, "plain");
    cr_assert_str_eq(d->rec[2].response, "");
    cr_assert_str_eq(d->rec[2].category, "3");
    cr_assert_str_eq(d->rec[2].id, "row-2");
    ss_dataset_free(d);
}

Test(dataset, csv_errors)
{
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d;
    ss_error err = {.msg = ""};
    const char *p = write_tmp("r.csv", "prompt,id\na,1\nb\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "r.csv:3") && strstr(err.msg, "1 fields"), "%s", err.msg);
    p = write_tmp("s.csv", "prompt,id\n\"open,1\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "s.csv:2") && strstr(err.msg, "never closed"), "%s", err.msg);
    p = write_tmp("t.csv", "goal,target\na,b\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "t.csv:1") && strstr(err.msg, "\"prompt\""), "%s", err.msg);
}

/* A row with more fields than the header, and NUL bytes (which cut C
 * strings short), used to load without a word. */
Test(dataset, extra_fields_and_nul_bytes)
{
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d;
    ss_error err = {.msg = ""};
    const char *p = write_tmp("wide.csv", "prompt,id\na,1\nb,2,extra\n");
    cr_assert_eq(ss_dataset_load(p, &f, &d, &err), -1);
    cr_assert(strstr(err.msg, "wide.csv:3: row has 3 fields, the header has 2"), "%s", err.msg);
    static const char csv[] = "prompt,id\nab\0cd,1\n", jsonl[] = "{\"prompt\": \"a\"}\n\0\n";
    const char *bodies[] = {csv, jsonl}, *names[] = {"nul.csv", "nul.jsonl"};
    const size_t lens[] = {sizeof csv - 1, sizeof jsonl - 1};
    const char *where[] = {"nul.csv:2: NUL byte at column 3", "nul.jsonl:2: NUL byte at column 1"};
    for (int i = 0; i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        FILE *fp = fopen(path, "wb");
        cr_assert_not_null(fp);
        fwrite(bodies[i], 1, lens[i], fp);
        fclose(fp);
        cr_assert_eq(ss_dataset_load(path, &f, &d, &err), -1, "%s loaded", names[i]);
        cr_assert(strstr(err.msg, where[i]), "%s", err.msg);
    }
}

static ss_dataset *numbered(int n)
{
    char body[8192] = "";
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(body + o, sizeof body - o,
                              "{\"prompt\":\"p%d\",\"id\":\"i%d\",\"category\":\"%s\"}\n", i, i,
                              i % 3 ? "a" : "b");
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    return load_ok(write_tmp("n.jsonl", body), &f);
}

Test(dataset, filter_offset_limit)
{
    ss_dataset *d = numbered(30);
    ss_dataset_select s;
    ss_dataset_select_default(&s);
    const char *cats[] = {"b"};
    s.categories = cats;
    s.n_categories = 1;
    s.offset = 2;
    s.limit = 3;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_dataset_apply(d, &s, &err), 0, "%s", err.msg);
    cr_assert_eq(d->n, 3);
    cr_assert_str_eq(d->rec[0].id, "i6");
    cr_assert_str_eq(d->rec[2].id, "i12");
    ss_dataset_free(d);
    d = numbered(5);
    const char *none[] = {"zzz"};
    s.categories = none;
    cr_assert_eq(ss_dataset_apply(d, &s, &err), -1);
    cr_assert(strstr(err.msg, "zzz"), "%s", err.msg);
    ss_dataset_free(d);
}

Test(dataset, shuffle_is_seeded_and_a_permutation)
{
    ss_dataset_select s;
    ss_dataset_select_default(&s);
    s.shuffle = 1;
    s.seed = 42;
    ss_error err = {.msg = ""};
    ss_dataset *a = numbered(40), *b = numbered(40), *c = numbered(40);
    cr_assert_eq(ss_dataset_apply(a, &s, &err), 0);
    cr_assert_eq(ss_dataset_apply(b, &s, &err), 0);
    s.seed = 43;
    cr_assert_eq(ss_dataset_apply(c, &s, &err), 0);
    int same_ab = 1, same_ac = 1, moved = 0, seen[40] = {0};
    for (int i = 0; i < 40; i++) {
        same_ab &= !strcmp(a->rec[i].id, b->rec[i].id);
        same_ac &= !strcmp(a->rec[i].id, c->rec[i].id);
        int k = atoi(a->rec[i].id + 1);
        seen[k]++;
        moved += k != i;
    }
    cr_assert(same_ab, "same seed, same order");
    cr_assert(!same_ac, "different seeds, different orders");
    cr_assert_gt(moved, 20);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(seen[i], 1);
    ss_dataset_free(a);
    ss_dataset_free(b);
    ss_dataset_free(c);
}

/* The shared public data sets (skipped when ../shared/data is absent). */
static const char *shared(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/../shared/data/%s", SS_SOURCE_DIR, name);
    return access(path, R_OK) == 0 ? path : NULL;
}

Test(dataset, shared_data_files)
{
    const char *hb = shared("harmbench_prompts.jsonl");
    if (!hb)
        cr_skip_test("../shared/data is absent");
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d = load_ok(hb, &f);
    cr_assert_eq(d->n, 200);
    ss_dataset_select s;
    ss_dataset_select_default(&s);
    const char *cats[] = {"illegal"};
    s.categories = cats;
    s.n_categories = 1;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_dataset_apply(d, &s, &err), 0, "%s", err.msg);
    cr_assert_eq(d->n, 58);
    ss_dataset_free(d);

    d = load_ok(shared("catqa_en.jsonl"), &f);
    cr_assert_eq(d->n, 550);
    ss_dataset_free(d);
    d = load_ok(shared("alpaca_instructions.jsonl"), &f);
    cr_assert_eq(d->n, 3000);
    cr_assert_str_eq(d->rec[0].category, "benign");
    ss_dataset_free(d);

    char spec[] = "prompt=goal,response=target";
    cr_assert_eq(ss_dataset_fields_parse(spec, &f, &err), 0);
    d = load_ok(shared("advbench_harmful_behaviors.csv"), &f);
    cr_assert_eq(d->n, 520);
    cr_assert(!strncmp(d->rec[0].response, "Sure, here is", 13), "%s", d->rec[0].response);
    ss_dataset_free(d);

    /* mixed CRLF/LF line endings, quoted multi-line context strings */
    ss_dataset_fields_default(&f);
    char spec2[] = "prompt=Behavior,id=BehaviorID,category=SemanticCategory";
    cr_assert_eq(ss_dataset_fields_parse(spec2, &f, &err), 0);
    d = load_ok(shared("harmbench_behaviors_text_all.csv"), &f);
    cr_assert_eq(d->n, 400);
    for (int i = 0; i < d->n; i++)
        cr_assert(!strchr(d->rec[i].id, '\r'), "CR leaked into id of row %d", i);
    ss_dataset_free(d);
}

Test(dataset, demo_prompts)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/data/demo_prompts.jsonl", SS_SOURCE_DIR);
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    ss_dataset *d = load_ok(path, &f);
    int unsafe = 0, safe = 0;
    for (int i = 0; i < d->n; i++) {
        unsafe += !strcmp(d->rec[i].label, "unsafe");
        safe += !strcmp(d->rec[i].label, "safe");
    }
    cr_assert_eq(unsafe + safe, d->n);
    cr_assert_geq(unsafe, 20);
    cr_assert_geq(safe, 20);
    ss_dataset_free(d);
}
