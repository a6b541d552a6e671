/* engine_nocuda.c - stands in for cuda/ when the build found no nvcc. */
#include "engine/backend.h"

int ss_engine_cuda_create(ss_engine *e, const ss_engine_opts *o, ss_error *err)
{
    (void)e;
    (void)o;
    return ss_fail(err, "device cuda: this safesteer was built without CUDA "
                        "(nvcc was not found when CMake configured the build)");
}
