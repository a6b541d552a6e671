/* config.h - sweep experiment files (YAML, read with libyaml).
 *
 * Every value keeps the line it came from, so later checks (a layer beyond
 * the model, a category with no prompts) still report FILE:LINE.  Unknown
 * keys, wrong types and bad values are errors.  The schema is documented in
 * docs/sweeps.md. */
#ifndef SAFESTEER_CONFIG_H
#define SAFESTEER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "safesteer/engine.h"
#include "safesteer/util.h"

#define SS_CFG_MAX_LIST 64

/* A prompt file with its field mapping and category filter. */
typedef struct {
    char *file;                          /* absolute; relative paths resolve against the config's folder */
    int line;                            /* where `file` was given */
    char *fields[5];                     /* prompt, id, category, label, response (NULL = default) */
    char *categories[SS_CFG_MAX_LIST];   /* [n_categories] */
    int category_lines[SS_CFG_MAX_LIST];
    int n_categories;
} ss_cfg_dataset;

typedef struct {
    char path[1024];        /* config file */
    char *model;            /* model path; NULL = the default model */
    int model_line;
    int device;             /* ss_device */
    int threads;            /* 0 = all cores */
    char *chat_template;    /* "auto" (detect), "chatml", "llama2", "llama3", "none" */
    char *system;           /* system prompt; NULL = template default */

    ss_cfg_dataset unsafe;  /* harmful prompts; categories = the sweep's categories */
    ss_cfg_dataset safe;    /* benign prompts */
    int safe_pool_category; /* 1: safe prompts of the same category; 0: generic pool */
    int n_fit, n_eval;      /* unsafe prompts per category for vectors / evaluation */
    int n_fit_safe;         /* safe prompts (generic pool, or per category) */
    uint64_t data_seed;
    int split_line;

    int sites[SS_SITE_COUNT];       /* ss_site, [n_sites]: capture and steering sites */
    int n_sites;
    int pool;                       /* ss_pool of the fitting capture */
    int methods[3];                 /* ss_vec_method, [n_methods] */
    int n_methods;
    int layers[SS_CFG_MAX_LIST];    /* [n_layers] */
    int layer_lines[SS_CFG_MAX_LIST];
    int n_layers;
    double strengths[SS_CFG_MAX_LIST]; /* [n_strengths], expanded from {from,to,step} */
    int n_strengths;
    char *positions;                /* ss_positions_parse syntax */

    int max_new;
    double temperature, top_p;
    uint64_t gen_seed;
    int batch;                      /* sequences per forward; 0 = auto (the sweep chooses) */

    char *refusal_phrases[SS_CFG_MAX_LIST];
    int n_refusal_phrases;
    int judge_kind;                 /* ss_judge_kind (eval.h) */
    char *judge_model;              /* "self" = the steered model, else a path */
    int judge_model_line;
    int judge_max_new;
    int relevance_layer;            /* -1 = middle layer */
    int relevance_line;
    int perplexity;                 /* 1 = compute response perplexity */
    char *out_dir;                  /* default output folder (--out overrides) */
} ss_sweep_config;

/* Loads and validates path (types, ranges, files present, no empty
 * category filter).  Errors read "FILE:LINE: ...". */
int ss_config_load(const char *path, ss_sweep_config *c, ss_error *err);
void ss_config_free(ss_sweep_config *c);
/* Checks the layers against a model of n_layers decoder blocks. */
int ss_config_check_model(const ss_sweep_config *c, int n_layers, ss_error *err);
/* Writes the resolved configuration (every default filled in, strengths
 * expanded) as YAML that ss_config_load reads back. */
int ss_config_write(const ss_sweep_config *c, FILE *f, ss_error *err);

#endif
