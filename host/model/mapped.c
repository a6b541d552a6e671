/* mapped.c - the one bounds-checked view of a model file that the GGUF and
 * safetensors readers share: the file mapped read-only, tensor sizes from
 * their dims with every product checked for overflow, and tensor data placed
 * so that each tensor lies inside the file, aligned, right after the one
 * before it (no gap, no overlap, no two tensors on one range). */
#include "model/model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int ss_mapped_open(const char *path, ss_mapped_file *f, ss_error *err)
{
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path)
        return ss_fail(err, "%s: path is too long", path);
    strcpy(f->path, path);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return ss_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ss_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return ss_fail(err, "%s: empty file", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return ss_fail(err, "%s: mmap of %lld bytes failed: %s", path, (long long)st.st_size,
                       strerror(errno));
    f->map = p;
    f->size = (size_t)st.st_size;
    return 0;
}

void ss_mapped_close(ss_mapped_file *f)
{
    if (f->map)
        munmap((void *)f->map, f->size);
    f->map = NULL;
    f->size = 0;
}

/* "[d0, d1, ...]" of the first n dims, for messages. */
static const char *ss_dims_text(const uint64_t *dims, int n, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < n && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRIu64, d ? ", " : "", dims[d]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
    return buf;
}

int ss_tensor_set_shape(ss_tensor *t, const char *file, int type, int n_dims,
                        const uint64_t *dims, ss_error *err)
{
    char text[160];
    if (n_dims < 1 || n_dims > 4)
        return ss_fail(err, "%s: tensor %s: n_dims = %d, expected 1..4", file, t->name, n_dims);
    uint64_t nelem = 1;
    for (int d = 0; d < n_dims; d++) {
        if (dims[d] == 0)
            return ss_fail(err, "%s: tensor %s: dims %s: dimension %d is zero", file, t->name,
                           ss_dims_text(dims, n_dims, text, sizeof text), d);
        if (dims[d] > (uint64_t)INT64_MAX / nelem)
            return ss_fail(err, "%s: tensor %s: dims %s: the element count overflows 2^63",
                           file, t->name, ss_dims_text(dims, n_dims, text, sizeof text));
        nelem *= dims[d];
    }
    int be = ss_type_block_elems(type), bb = ss_type_block_bytes(type);
    if (be <= 0)
        return ss_fail(err, "%s: tensor %s: type %s cannot be decoded", file, t->name,
                       ss_type_name(type));
    if (dims[0] % (uint64_t)be)
        return ss_fail(err, "%s: tensor %s: dims[0] = %" PRIu64 " is not a multiple of the %s "
                            "block size %d",
                       file, t->name, dims[0], ss_type_name(type), be);
    uint64_t blocks = nelem / (uint64_t)be;
    if (blocks > (uint64_t)INT64_MAX / (uint64_t)bb || blocks * (uint64_t)bb > SIZE_MAX)
        return ss_fail(err, "%s: tensor %s: dims %s of %s take more than 2^63 bytes", file,
                       t->name, ss_dims_text(dims, n_dims, text, sizeof text), ss_type_name(type));
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++)
        t->dims[d] = d < n_dims ? (int64_t)dims[d] : 1;
    t->nbytes = (size_t)(blocks * (uint64_t)bb);
    return 0;
}

static int ss_slot_cmp(const void *a, const void *b)
{
    const ss_tensor_slot *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static uint64_t ss_align_up(uint64_t v, uint64_t alignment)
{
    return v + (alignment - v % alignment) % alignment;
}

int ss_mapped_place(const ss_mapped_file *f, size_t data_start, uint64_t alignment,
                    int in_offset_order, ss_tensor_slot *slots, size_t n, ss_error *err)
{
    if (data_start > f->size)
        return ss_fail(err, "%s: the tensor data would start at offset %zu, past the end of the "
                            "file (%zu bytes)",
                       f->path, data_start, f->size);
    uint64_t room = f->size - data_start; /* bytes of the data section */
    if (in_offset_order)
        qsort(slots, n, sizeof *slots, ss_slot_cmp);
    uint64_t next = 0, end = 0; /* where the next tensor must begin; the last one's end */
    const ss_tensor *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        ss_tensor *t = slots[i].t;
        uint64_t begin = slots[i].begin;
        if (begin % alignment)
            return ss_fail(err, "%s: tensor %s: data offset %" PRIu64 " is not a multiple of "
                                "the alignment %" PRIu64,
                           f->path, t->name, begin, alignment);
        if (begin > room || t->nbytes > room - begin)
            return ss_fail(err, "%s: tensor %s: data [%" PRIu64 ", +%zu) of the data section "
                                "at file offset %zu runs past the end of the file (%zu bytes)",
                           f->path, t->name, begin, t->nbytes, data_start, f->size);
        if (begin < next)
            return ss_fail(err, "%s: tensor %s: data [%" PRIu64 ", %" PRIu64 ") overlaps tensor "
                                "%s, which ends at %" PRIu64,
                           f->path, t->name, begin, begin + t->nbytes, prev->name, end);
        if (begin > next) {
            if (!prev)
                return ss_fail(err, "%s: tensor %s: data offset %" PRIu64 " leaves %" PRIu64
                                    " bytes at the start of the data section that no tensor "
                                    "describes",
                               f->path, t->name, begin, begin);
            return ss_fail(err, "%s: tensor %s: data offset %" PRIu64 " leaves a gap of %" PRIu64
                                " bytes after tensor %s (%s, %" PRId64 " values, %zu bytes): "
                                "the tensor infos do not describe the data",
                           f->path, t->name, begin, begin - next, prev->name,
                           ss_type_name(prev->type), ss_tensor_nelem(prev), prev->nbytes);
        }
        t->data = f->map + data_start + begin;
        end = begin + t->nbytes;
        next = ss_align_up(end, alignment);
        prev = t;
    }
    if (room - end >= alignment)
        return ss_fail(err, "%s: %" PRIu64 " bytes after the last tensor's data%s%s that no "
                            "tensor describes",
                       f->path, room - end, prev ? " (tensor " : "", prev ? prev->name : "");
    return 0;
}

static int ss_name_cmp(const void *a, const void *b)
{
    const ss_gguf_str *x = *(const ss_gguf_str *const *)a, *y = *(const ss_gguf_str *const *)b;
    int c = memcmp(x->ptr, y->ptr, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

int ss_find_duplicate(const ss_gguf_str *names, size_t n, size_t *first, size_t *second,
                      ss_error *err)
{
    const ss_gguf_str **sorted = ss_malloc((n ? n : 1) * sizeof *sorted, err);
    if (!sorted)
        return -1;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &names[i];
    qsort(sorted, n, sizeof *sorted, ss_name_cmp);
    int found = 0;
    for (size_t i = 1; i < n && !found; i++)
        if (!ss_name_cmp(&sorted[i - 1], &sorted[i])) {
            size_t a = (size_t)(sorted[i - 1] - names), b = (size_t)(sorted[i] - names);
            *first = a < b ? a : b;
            *second = a < b ? b : a;
            found = 1;
        }
    free(sorted);
    return found;
}
