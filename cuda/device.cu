/* device.cu - device plumbing kernels.h exports: device discovery, the
 * stream/cuBLAS context, checked allocation and copies, NaN poisoning,
 * host bf16 conversions, event timers, the device-to-device copy bandwidth
 * probe and the nominal bf16 peak.  Kept apart from engine_cuda.cu so the
 * kernel tests link without the engine (and its host-library needs).
 * Exercised by every device test; the copy probe by `safesteer bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

extern "C" int ss_cuda_device_count(char *why, size_t cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why)
            snprintf(why, cap, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0 && why)
        snprintf(why, cap, "cudaGetDeviceCount: 0 devices");
    return n;
}

int ss_cuda_launched(ss_cuda_ctx *c, const char *kernel, ss_error *err)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return ss_fail(err, "CUDA kernel %s failed to launch: %s", kernel, cudaGetErrorString(e));
    if (c->sync_each && !c->capturing) {
        e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess)
            return ss_fail(err, "CUDA kernel %s failed: %s", kernel, cudaGetErrorString(e));
    }
    return 0;
}

static int ss_cuda_ctx_init(ss_cuda_ctx *c, ss_error *err)
{
    SS_CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamDefault), err);
    SS_CU(cudaMalloc(&c->workspace, c->workspace_bytes), err);
    SS_BLAS(cublasCreate(&c->blas), err);
    SS_BLAS(cublasSetStream(c->blas, c->stream), err);
    SS_BLAS(cublasSetWorkspace(c->blas, c->workspace, c->workspace_bytes), err);
    return 0;
}

extern "C" int ss_cuda_select_device(int gpu, ss_error *err)
{
    char why[256];
    int n = ss_cuda_device_count(why, sizeof why);
    if (n == 0)
        return ss_fail(err, "device cuda: no CUDA device available (%s)", why);
    if (gpu < 0 || gpu >= n)
        return ss_fail(err, "device cuda: GPU %d requested but %d device(s) present", gpu, n);
    SS_CU(cudaSetDevice(gpu), err);
    return 0;
}

extern "C" int ss_cuda_ctx_create(int gpu, ss_cuda_ctx **out, ss_error *err)
{
    *out = NULL;
    if (ss_cuda_select_device(gpu, err))
        return -1;
    ss_cuda_ctx *c = (ss_cuda_ctx *)ss_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    c->gpu = gpu;
    const char *sync = getenv("SAFESTEER_CUDA_SYNC");
    c->sync_each = sync && sync[0] == '1';
    c->workspace_bytes = 32u << 20;
    if (ss_cuda_ctx_init(c, err)) {
        ss_cuda_ctx_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

extern "C" void ss_cuda_ctx_free(ss_cuda_ctx *c)
{
    if (!c)
        return;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->blas)
        cublasDestroy(c->blas);
    cudaFree(c->workspace);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int ss_cuda_sync(ss_cuda_ctx *c, ss_error *err)
{
    SS_CU(cudaStreamSynchronize(c->stream), err);
    return 0;
}

extern "C" void *ss_cuda_malloc(size_t bytes, ss_error *err)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        ss_fail(err, "cudaMalloc of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void ss_cuda_free(void *d) { cudaFree(d); }

extern "C" int ss_cuda_upload(void *d_dst, const void *src, size_t bytes, ss_error *err)
{
    SS_CU(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), err);
    return 0;
}

extern "C" int ss_cuda_download(void *dst, const void *d_src, size_t bytes, ss_error *err)
{
    SS_CU(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), err);
    return 0;
}

extern "C" int ss_cuda_poison(void *d, size_t bytes, ss_error *err)
{
    SS_CU(cudaMemset(d, 0xff, bytes), err);
    SS_CU(cudaDeviceSynchronize(), err);
    return 0;
}

extern "C" void ss_cuda_host_f32_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            dst[i] = (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
        else
            dst[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

extern "C" void ss_cuda_host_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

struct ss_cuda_timer {
    cudaEvent_t a, b;
};

extern "C" int ss_cuda_timer_create(ss_cuda_timer **out, ss_error *err)
{
    ss_cuda_timer *t = (ss_cuda_timer *)ss_calloc(1, sizeof *t, err);
    if (!t)
        return -1;
    if (cudaEventCreate(&t->a) != cudaSuccess || cudaEventCreate(&t->b) != cudaSuccess) {
        free(t);
        return ss_fail(err, "cudaEventCreate failed: %s", cudaGetErrorString(cudaGetLastError()));
    }
    *out = t;
    return 0;
}

extern "C" void ss_cuda_timer_free(ss_cuda_timer *t)
{
    if (!t)
        return;
    cudaEventDestroy(t->a);
    cudaEventDestroy(t->b);
    free(t);
}

extern "C" int ss_cuda_timer_start(ss_cuda_timer *t, ss_error *err)
{
    SS_CU(cudaEventRecord(t->a, 0), err);
    return 0;
}

extern "C" int ss_cuda_timer_stop(ss_cuda_timer *t, double *ms, ss_error *err)
{
    SS_CU(cudaEventRecord(t->b, 0), err);
    SS_CU(cudaEventSynchronize(t->b), err);
    float f = 0.0f;
    SS_CU(cudaEventElapsedTime(&f, t->a, t->b), err);
    *ms = f;
    return 0;
}

static int ss_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

extern "C" int ss_cuda_copy_bandwidth(size_t bytes, int reps, double *gbps, ss_error *err)
{
    void *a = ss_cuda_malloc(bytes, err), *b = a ? ss_cuda_malloc(bytes, err) : NULL;
    ss_cuda_timer *t = NULL;
    double *ms = (double *)ss_calloc((size_t)reps, sizeof(double), err);
    int rc = -1;
    if (!b || !ms || ss_cuda_timer_create(&t, err))
        goto done;
    if (cudaMemset(a, 0x3c, bytes) != cudaSuccess ||
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess) { /* warm-up */
        ss_fail(err, "copy bandwidth warm-up failed: %s", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    for (int r = 0; r < reps; r++) {
        if (ss_cuda_timer_start(t, err))
            goto done;
        if (cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0) != cudaSuccess) {
            ss_fail(err, "cudaMemcpyAsync D2D failed");
            goto done;
        }
        if (ss_cuda_timer_stop(t, &ms[r], err))
            goto done;
    }
    qsort(ms, (size_t)reps, sizeof *ms, ss_cmp_double);
    *gbps = 2.0 * (double)bytes / (ms[reps / 2] * 1e-3) / 1e9;
    rc = 0;
done:
    ss_cuda_timer_free(t);
    free(ms);
    cudaFree(a);
    cudaFree(b);
    return rc;
}

extern "C" double ss_cuda_bf16_peak_tflops(int gpu)
{
    int sms = 0, khz = 0, major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, gpu) != cudaSuccess ||
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, gpu) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, gpu) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, gpu) != cudaSuccess)
        return 0.0;
    /* dense bf16 FLOPs per SM per clock (tensor cores, f32 accumulate) */
    int per_clk = major == 9 ? 4096 : (major == 8 && minor == 0) ? 2048 : major == 8 ? 512 : 0;
    return (double)sms * khz * 1e3 * per_clk / 1e12;
}

/* Times reps GEMMs C = A B (size^3, bf16, random data: zeros run faster). */
static int ss_gemm_time(ss_cuda_ctx *c, uint16_t *a, uint16_t *b, uint16_t *d, int size, int reps,
                        double *ms, ss_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    ss_cuda_timer *t = NULL;
    if (ss_cuda_timer_create(&t, err))
        return -1;
    int rc = -1;
    for (int r = -2; r < reps; r++) { /* two warm-ups: heuristics, clocks */
        double x;
        if (ss_cuda_timer_start(t, err))
            goto done;
        cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, size, size, size, &one,
                                        a, CUDA_R_16BF, size, b, CUDA_R_16BF, size, &zero, d,
                                        CUDA_R_16BF, size, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) {
            ss_fail(err, "ss_cuda_gemm_tflops: cublasGemmEx (%d^3): status %d", size, (int)s);
            goto done;
        }
        if (ss_cuda_timer_stop(t, &x, err))
            goto done;
        if (r >= 0)
            ms[r] = x;
    }
    rc = 0;
done:
    ss_cuda_timer_free(t);
    return rc;
}

extern "C" int ss_cuda_gemm_tflops(int size, int reps, double *tflops, ss_error *err)
{
    int gpu = 0;
    SS_CU(cudaGetDevice(&gpu), err);
    size_t n = (size_t)size * size;
    ss_cuda_ctx *c = NULL;
    uint16_t *a = NULL, *b = NULL, *d = NULL;
    double *ms = (double *)ss_calloc((size_t)reps, sizeof(double), err);
    int rc = -1;
    if (!ms || ss_cuda_ctx_create(gpu, &c, err) || !(a = (uint16_t *)ss_cuda_malloc(n * 2, err)) ||
        !(b = (uint16_t *)ss_cuda_malloc(n * 2, err)) ||
        !(d = (uint16_t *)ss_cuda_malloc(n * 2, err)) ||
        ss_cuda_fill_random_bf16(c, a, n, 11, 0.0f, 1.0f, err) ||
        ss_cuda_fill_random_bf16(c, b, n, 12, 0.0f, 1.0f, err) ||
        ss_gemm_time(c, a, b, d, size, reps, ms, err))
        goto done;
    qsort(ms, (size_t)reps, sizeof *ms, ss_cmp_double);
    *tflops = 2.0 * (double)size * size * size / (ms[reps / 2] * 1e-3) / 1e12;
    rc = 0;
done:
    free(ms);
    ss_cuda_free(a);
    ss_cuda_free(b);
    ss_cuda_free(d);
    ss_cuda_ctx_free(c);
    return rc;
}

extern "C" int ss_cuda_device_info(int gpu, char *name, size_t cap, double *mem_gib,
                                   ss_error *err)
{
    cudaDeviceProp p;
    SS_CU(cudaGetDeviceProperties(&p, gpu), err);
    snprintf(name, cap, "%s (sm_%d%d, %d SMs)", p.name, p.major, p.minor, p.multiProcessorCount);
    *mem_gib = (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0);
    return 0;
}

