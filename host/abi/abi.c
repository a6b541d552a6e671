/* abi.c - struct sizes and frees for bindings (see abi.h). */
#include "safesteer/abi.h"

#include <stdlib.h>
#include <string.h>

#include "safesteer/capture.h"
#include "safesteer/config.h"
#include "safesteer/generate.h"
#include "safesteer/steer.h"
#include "safesteer/sweep.h"
#include "safesteer/vectors.h"

#define SIZE(T) {#T, sizeof(T)}

static const struct {
    const char *name;
    size_t size;
} sizes[] = {
    SIZE(ss_error),          SIZE(ss_progress_report), SIZE(ss_progress_sink),
    SIZE(ss_config),         SIZE(ss_engine_opts),     SIZE(ss_sampler_params),
    SIZE(ss_gen_params),     SIZE(ss_gen_result),      SIZE(ss_gen_timing),
    SIZE(ss_gen_request),    SIZE(ss_positions),       SIZE(ss_steer_plan),
    SIZE(ss_steer_source),   SIZE(ss_vector_set),      SIZE(ss_vec_options),
    SIZE(ss_capture_source), SIZE(ss_capture_opts),    SIZE(ss_capture_data),
    SIZE(ss_sweep_config),   SIZE(ss_sweep_opts),      SIZE(ss_chat_msg),
};

size_t ss_abi_sizeof(const char *struct_name)
{
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(sizes[i].name, struct_name))
            return sizes[i].size;
    return 0;
}

const char *ss_abi_version(void) { return SAFESTEER_VERSION; }

int ss_abi_has_cuda(void)
{
#ifdef SAFESTEER_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

void ss_abi_free(void *p) { free(p); }
