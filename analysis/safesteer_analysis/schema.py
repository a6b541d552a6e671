"""Every file, attribute, dataset and column name the loaders rely on.

The C writers are the source of truth: host/capture/capture.c (docs/hdf5-schema.md),
host/vectors/vectors.c and host/cluster/cluster.c (docs/vectors.md), host/cli/cmd_bench.c
(docs/bench/*.json). The sweep names follow the sweep issue's schema; if the
sweep runner lands with different names, adjust them here only.
"""

# -- capture files (safesteer capture) -------------------------------------
CAPTURE_FORMAT = "safesteer.capture"
CAPTURE_VERSIONS = (1,)
# /prompts/<name>: string columns always present, the rest optional.
CAPTURE_PROMPT_STR = ("id", "text", "category", "label")
CAPTURE_PROMPT_OPTIONAL = ("response", "n_tokens", "n_response_tokens", "n_generated")
CAPTURE_ACTS = "acts"            # [N][L][d] pooled, or [T][L][d] with OFFSETS
CAPTURE_OFFSETS = "offsets"      # int64 [N+1], pooling = all only
CAPTURE_LAYERS = "layers"        # int32 [L]
CAPTURE_LAYER_NORMS = "layer_norms"
CAPTURE_COMPLETE = "complete"    # root attribute, 1 once all prompts are written

# -- vector files (safesteer vectors) --------------------------------------
VECTORS_FORMAT = "safesteer.vectors"
VECTORS_VERSIONS = (1,)
VECTORS_REQUIRED = ("vectors", "categories", "layers")   # [C][L][d], [C], [L]
VECTORS_OPTIONAL = ("norms", "cosine", "separability", "counts_unsafe", "counts_safe",
                    "counts_kept", "safe_pool", "split", "safe_split")

# -- cluster files (safesteer cluster) -------------------------------------
CLUSTERS_FORMAT = "safesteer.clusters"
CLUSTERS_VERSIONS = (1,)
CLUSTERS_REQUIRED = ("assignments", "centroids", "k_values", "silhouette", "inertia",
                     "cluster_sizes", "categories", "contingency")
CLUSTERS_OPTIONAL = ("vectors",)

# -- sweep run folders (safesteer sweep) ------------------------------------
# Written by host/sweep/results.c (docs/sweeps.md, "Statistics in the tables").
SWEEP_FORMAT = "safesteer.sweep"
SWEEP_VERSIONS = (1, 2)          # 2: counts, Wilson intervals, paired tests, model_path
SWEEP_RESULTS = "results.h5"
SWEEP_GENERATIONS = "generations.jsonl"
SWEEP_SUMMARY = "summary.csv"
SWEEP_CONFIG = "config.resolved.yaml"
SWEEP_CELLS_GROUP = "cells"
SWEEP_CELL_COLUMNS = ("cell_id", "category", "method", "layer", "strength", "site",
                      "n_prompts", "unsafe_rate", "refusal_rate", "perplexity",
                      "distinct_1", "distinct_2", "mean_length", "relevance")
SWEEP_CELL_KEYS = ("cell_id", "category", "method", "layer", "strength")  # must exist
SWEEP_ROOT_ATTRS = ("config_yaml", "model_name", "model_sha256")
SWEEP_MODEL_PATH_ATTR = "model_path"   # version 2
SWEEP_GENERATION_FIELDS = ("cell_id", "category", "method", "layer", "strength",
                           "prompt_id", "prompt", "response", "refused", "unsafe",
                           "judge_output", "perplexity", "relevance", "n_tokens")
# Version 2: per rate R (column prefix): R_count, R_n, R_rate, R_ci_low,
# R_ci_high; the paired ones also R_paired_n, R_gained, R_lost, R_change,
# R_change_p (exact McNemar against the category baseline).
SWEEP_RATES = ("unsafe", "refusal", "degenerate", "judge_contradiction")
SWEEP_PAIRED_RATES = ("unsafe", "refusal", "degenerate")
SWEEP_GENERATION_FLAGS = {"unsafe": "unsafe", "refusal": "refused", "degenerate": "degenerate",
                          "judge_contradiction": "judge_contradiction"}
BASELINE_LAYER = -1              # layer of the no-steering cell of each category

# -- benchmark JSON (safesteer bench --json) --------------------------------
BENCH_REQUIRED = ("model", "device", "timing", "prefill", "decode", "steering")
BENCH_DECODE_FIELDS = ("batch", "graphs", "step_ms", "tokens_per_s", "bytes_per_step", "gbps")
BENCH_STEERING_FIELDS = ("none_ms", "one_layer_ms", "all_layers_ms")
