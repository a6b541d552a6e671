/* engine_nocuda.c - stands in for cuda/ when the build found no nvcc. */
#include "engine/backend.h"

static int ss_no_cuda(ss_error *err)
{
    return ss_fail(err, "device cuda: this safesteer was built without CUDA "
                        "(nvcc was not found when CMake configured the build)");
}

int ss_engine_cuda_create(ss_engine *e, const ss_engine_opts *o, ss_error *err)
{
    (void)e;
    (void)o;
    return ss_no_cuda(err);
}

int ss_engine_cuda_footprint(const ss_model *m, const ss_engine_opts *o, ss_engine_footprint *f,
                             ss_error *err)
{
    (void)m;
    (void)o;
    (void)f;
    return ss_no_cuda(err);
}
