/* test_config.c - sweep experiment files: schema errors with FILE:LINE,
 * defaults, strength ranges, data split checks, and the resolved config
 * reading back to the same configuration. */
#include <criterion/criterion.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/config.h"
#include "safesteer/eval.h"
#include "safesteer/sweep.h"

#define DATA SS_SOURCE_DIR "/data/demo_prompts.jsonl"

static const char *base_yaml =
    "data:\n"                                  /* 1 */
    "  unsafe:\n"                              /* 2 */
    "    file: " DATA "\n"                     /* 3 */
    "    categories: [violence, crime]\n"      /* 4 */
    "  safe:\n"                                /* 5 */
    "    file: " DATA "\n"                     /* 6 */
    "    categories: [benign]\n"               /* 7 */
    "  fit: 3\n"                               /* 8 */
    "  eval: 2\n"                              /* 9 */
    "layers: [10, 14]\n"                       /* 10 */
    "strengths: [2, 4]\n";                     /* 11 */

static char path[256];

static void write_yaml(const char *text)
{
    snprintf(path, sizeof path, "/tmp/ss_test_config_%d.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

/* Loads base_yaml with `from` replaced by `to`; returns ss_config_load's rc. */
static int load_edit(const char *from, const char *to, ss_sweep_config *c, ss_error *err)
{
    char buf[4096];
    const char *at = from ? strstr(base_yaml, from) : NULL;
    cr_assert(!from || at, "edit anchor \"%s\" not in the base config", from);
    if (at)
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - base_yaml), base_yaml, to,
                 at + strlen(from));
    else
        snprintf(buf, sizeof buf, "%s", base_yaml);
    write_yaml(buf);
    return ss_config_load(path, c, err);
}

static void expect_error(const char *from, const char *to, int line, const char *needle)
{
    ss_sweep_config c;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit(from, to, &c, &err), -1, "expected an error for \"%s\"", to);
    char where[300];
    snprintf(where, sizeof where, "%s:%d:", path, line);
    cr_assert(strstr(err.msg, where), "\"%s\" lacks %s", err.msg, where);
    cr_assert(strstr(err.msg, needle), "\"%s\" lacks \"%s\"", err.msg, needle);
    ss_config_free(&c);
}

Test(config, defaults_and_values)
{
    ss_sweep_config c;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit(NULL, NULL, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.unsafe.n_categories, 2);
    cr_assert_str_eq(c.unsafe.categories[1], "crime");
    cr_assert_eq(c.unsafe.category_lines[1], 4);
    cr_assert_eq(c.n_layers, 2);
    cr_assert_eq(c.layers[1], 14);
    cr_assert_eq(c.layer_lines[0], 10);
    cr_assert_eq(c.n_strengths, 2);
    cr_assert_eq(c.n_fit, 3);
    cr_assert_eq(c.n_eval, 2);
    cr_assert_eq(c.n_sites, 1);
    cr_assert_eq(c.sites[0], SS_SITE_RESID_POST);
    cr_assert_eq(c.judge_kind, SS_JUDGE_NONE);
    cr_assert_gt(c.n_refusal_phrases, 5);
    cr_assert_str_eq(c.positions, "all");
    cr_assert_eq(c.temperature, 0.0);
    ss_config_free(&c);
}

Test(config, strength_range_expands)
{
    ss_sweep_config c;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit("strengths: [2, 4]", "strengths: {from: 1, to: 2, step: 0.25}", &c,
                           &err), 0, "%s", err.msg);
    cr_assert_eq(c.n_strengths, 5);
    cr_assert_float_eq(c.strengths[4], 2.0, 1e-12);
    ss_config_free(&c);
}

Test(config, unknown_key) { expect_error("  fit: 3\n", "  fit: 3\n  fitt: 4\n", 9, "unknown key \"fitt\""); }
Test(config, unknown_top_level_key) { expect_error("layers:", "lyers: 3\nlayers:", 10, "unknown key \"lyers\""); }
Test(config, wrong_type_scalar) { expect_error("  fit: 3", "  fit: three", 8, "must be an integer"); }
Test(config, wrong_type_list) { expect_error("layers: [10, 14]", "layers: {a: 1}", 10, "must be a list"); }
Test(config, wrong_type_mapping) { expect_error("strengths: [2, 4]", "strengths: [2, 4]\ngeneration: 5", 12, "must be a mapping"); }
Test(config, bad_value_range) { expect_error("  eval: 2", "  eval: 0", 9, "outside"); }
Test(config, bad_site) { expect_error("strengths: [2, 4]", "strengths: [2, 4]\ncapture: {sites: [nowhere]}", 12, "capture.sites"); }
Test(config, bad_method) { expect_error("strengths: [2, 4]", "strengths: [2, 4]\nvectors:\n  methods: [median]", 13, "vectors.methods"); }
Test(config, bad_range) { expect_error("strengths: [2, 4]", "strengths: {from: 4, to: 2, step: 1}", 11, "to >= from"); }
Test(config, missing_file) { expect_error("    file: " DATA "\n    categories: [benign]", "    file: nope.jsonl\n    categories: [benign]", 6, "not found"); }
Test(config, duplicate_key) { expect_error("  fit: 3\n", "  fit: 3\n  fit: 4\n", 9, "key \"fit\" appears twice in data (first on line 8)"); }
Test(config, duplicate_top_level_key) { expect_error("layers: [10, 14]\n", "layers: [10, 14]\nlayers: [3]\n", 11, "key \"layers\" appears twice in the top level (first on line 10)"); }
Test(config, duplicate_layer) { expect_error("layers: [10, 14]", "layers: [10, 10]", 10, "listed twice"); }
Test(config, missing_section) { expect_error("layers: [10, 14]\n", "", 1, "missing layers"); }
Test(config, yaml_syntax) { expect_error("  fit: 3", "  fit: [3", 9, "YAML error"); }
Test(config, guard_needs_model) { expect_error("strengths: [2, 4]", "strengths: [2, 4]\njudges:\n  llm: {model: self, kind: llama-guard}", 13, "Llama Guard"); }

Test(config, layer_beyond_model)
{
    ss_sweep_config c;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit("layers: [10, 14]", "layers:\n  - 10\n  - 30", &c, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(ss_config_check_model(&c, 31, &err), 0);
    cr_assert_eq(ss_config_check_model(&c, 30, &err), -1);
    char where[300];
    snprintf(where, sizeof where, "%s:12: layer 30 is beyond the model", path);
    cr_assert(strstr(err.msg, where), "%s", err.msg);
    ss_config_free(&c);
}

Test(config, empty_category)
{
    ss_sweep_config c;
    ss_sweep_data d;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit("[violence, crime]", "[violence,\n                 nosuchcat]", &c,
                           &err), 0, "%s", err.msg);
    cr_assert_eq(ss_sweep_load_data(&c, &d, &err), -1);
    char where[300];
    snprintf(where, sizeof where, "%s:5: category \"nosuchcat\"", path);
    cr_assert(strstr(err.msg, where), "%s", err.msg);
    ss_config_free(&c);
}

Test(config, too_few_prompts_for_split)
{
    ss_sweep_config c;
    ss_sweep_data d;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit("  fit: 3", "  fit: 5", &c, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_sweep_load_data(&c, &d, &err), -1);
    cr_assert(strstr(err.msg, ":4: category \"violence\""), "%s", err.msg);
    cr_assert(strstr(err.msg, "needs 7"), "%s", err.msg);
    ss_config_free(&c);
}

Test(config, data_split)
{
    ss_sweep_config c;
    ss_sweep_data d;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit(NULL, NULL, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_sweep_load_data(&c, &d, &err), 0, "%s", err.msg);
    /* 2 x 3 unsafe fit + 16 safe (the default fit_safe) */
    cr_assert_eq(d.fit.n, 6 + 16);
    cr_assert_eq(d.eval[0].n, 2);
    cr_assert_str_eq(d.fit.label[0], "unsafe");
    cr_assert_str_eq(d.fit.label[6], "safe");
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 6; i++)
                cr_assert_str_neq(d.eval[k].id[j], d.fit.id[i], "eval prompt also fits vectors");
    ss_sweep_data_free(&d);
    ss_config_free(&c);
}

Test(config, resolved_round_trip)
{
    ss_sweep_config c, c2;
    ss_error err = {.msg = ""};
    cr_assert_eq(load_edit("strengths: [2, 4]",
                           "strengths: [2, 4]\njudges:\n  refusal: {phrases: [\"I won't\"]}\n"
                           "generation: {max_new: 7, temperature: 0.5}\npositions: \"from:3\"",
                           &c, &err), 0, "%s", err.msg);
    char *a = NULL, *b = NULL;
    size_t na, nb;
    FILE *f = open_memstream(&a, &na);
    cr_assert_eq(ss_config_write(&c, f, &err), 0);
    fclose(f);
    write_yaml(a);
    cr_assert_eq(ss_config_load(path, &c2, &err), 0, "%s\n%s", err.msg, a);
    f = open_memstream(&b, &nb);
    cr_assert_eq(ss_config_write(&c2, f, &err), 0);
    fclose(f);
    cr_assert_str_eq(a, b);
    cr_assert_eq(c2.n_refusal_phrases, 1);
    cr_assert_str_eq(c2.refusal_phrases[0], "I won't");
    cr_assert_eq(c2.max_new, 7);
    cr_assert_str_eq(c2.positions, "from:3");
    free(a);
    free(b);
    ss_config_free(&c);
    ss_config_free(&c2);
}
