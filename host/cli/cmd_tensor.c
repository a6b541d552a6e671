/* cmd_tensor.c - `safesteer tensor`: writes one tensor, decoded to float32,
 * as a NumPy .npy file (format 1.0), or lists the tensors of a GGUF file or
 * Hugging Face folder. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/model_internal.h"
#include "util/outfile.h"
#include "cli.h"

static void ss_tensor_usage(FILE *f)
{
    fprintf(f, "usage: safesteer tensor [--model MODEL] --name NAME --out FILE.npy\n"
               "       safesteer tensor [--model MODEL] --list\n\n"
               "  --model PATH  GGUF file (any architecture) or Hugging Face folder\n"
               "                (default: %s)\n"
               "  --name NAME   tensor name as stored in the file (e.g. blk.0.attn_q.weight)\n"
               "  --out FILE    output .npy (float32, numpy shape = reversed GGUF dims)\n"
               "  --list        print every tensor's name, type and dims\n",
               ss_default_model_path());
}

/* NPY 1.0 header: magic, version, u16 length, dict padded with spaces to a
 * multiple of 64 bytes and ended by '\n'. */
static int ss_write_npy_header(FILE *f, const ss_tensor *t)
{
    char shape[160] = "";
    size_t n = 0;
    for (int d = t->n_dims - 1; d >= 0; d--)
        n += (size_t)snprintf(shape + n, sizeof shape - n, "%" PRId64 "%s", t->dims[d],
                              (d > 0 || t->n_dims == 1) ? ", " : "");
    if (t->n_dims == 1)
        shape[n - 1] = 0; /* "(576,)" */
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }",
                       shape);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    uint16_t hlen = (uint16_t)(len + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    if (fwrite(pre, 1, sizeof pre, f) != sizeof pre || fwrite(dict, 1, (size_t)len, f) != (size_t)len)
        return -1;
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    return fputc('\n', f) == EOF ? -1 : 0;
}

/* Decodes the tensor in row chunks so huge embeddings need little memory. */
static int ss_write_npy(const char *path, const ss_tensor *t, ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, path, err);
    if (!f)
        return -1;
    int64_t row = t->dims[0], nrows = ss_tensor_nelem(t) / row;
    int64_t chunk = (1 << 20) / row > 0 ? (1 << 20) / row : 1;
    float *buf = ss_malloc((size_t)(chunk * row) * sizeof(float), err); /* [chunk][row] */
    int rc = buf && ss_write_npy_header(f, t) == 0 ? 0 : -1;
    for (int64_t r = 0; rc == 0 && r < nrows; r += chunk) {
        int64_t n = nrows - r < chunk ? nrows - r : chunk;
        ss_tensor_rows_f32(t, r, n, buf);
        if (fwrite(buf, sizeof(float), (size_t)(n * row), f) != (size_t)(n * row))
            rc = -1;
    }
    if (rc && buf)
        ss_fail(err, "write to %s failed", out.tmp);
    free(buf);
    return ss_outfile_fclose(&out, f, rc, err);
}

/* The tensors of a GGUF file or a Hugging Face folder's safetensors; no
 * architecture is required, so any GGUF can be inspected. */
typedef struct {
    ss_gguf *gguf;
    struct ss_hf_folder *hf;
    const ss_tensor *tensors; /* [n] */
    size_t n;
} ss_tensor_file;

static int ss_tensor_file_open(const char *path, ss_tensor_file *tf, ss_error *err)
{
    struct stat st;
    memset(tf, 0, sizeof *tf);
    if (stat(path, &st) != 0)
        return ss_fail(err, "%s: no such file or folder", path);
    if (S_ISDIR(st.st_mode)) {
        if (ss_hf_open(path, &tf->hf, err))
            return -1;
        tf->tensors = tf->hf->tensors;
        tf->n = tf->hf->n_tensors;
        return 0;
    }
    if (ss_gguf_open(path, &tf->gguf, err))
        return -1;
    tf->tensors = tf->gguf->tensors;
    tf->n = (size_t)tf->gguf->n_tensors;
    return 0;
}

static void ss_tensor_file_close(ss_tensor_file *tf)
{
    ss_gguf_close(tf->gguf);
    ss_hf_close(tf->hf);
}

static void ss_list_tensors(const ss_tensor_file *tf)
{
    const ss_tensor *t = tf->tensors;
    for (size_t i = 0; i < tf->n; i++) {
        printf("%-48s %-5s {", t[i].name, ss_type_name(t[i].type));
        for (int d = 0; d < t[i].n_dims; d++)
            printf("%s%" PRId64, d ? ", " : "", t[i].dims[d]);
        printf("}\n");
    }
}

static const ss_tensor *ss_tensor_file_find(const ss_tensor_file *tf, const char *name)
{
    for (size_t i = 0; i < tf->n; i++)
        if (!strcmp(tf->tensors[i].name, name))
            return &tf->tensors[i];
    return NULL;
}

int ss_cmd_tensor(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"name", required_argument, 0, 'n'},
                                         {"out", required_argument, 0, 'o'},
                                         {"list", no_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = ss_default_model_path(), *name = NULL, *out = NULL;
    int list = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:n:o:lh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'n': name = optarg; break;
        case 'o': out = optarg; break;
        case 'l': list = 1; break;
        case 'h': ss_tensor_usage(stdout); return SS_EXIT_OK;
        default: ss_tensor_usage(stderr); return SS_EXIT_USAGE;
        }
    }
    if (optind < argc || (!list && (!name || !out))) {
        ss_tensor_usage(stderr);
        return ss_cli_error("tensor", SS_EXIT_USAGE, "need --name and --out (or --list)");
    }
    ss_error err;
    ss_tensor_file tf;
    if (ss_tensor_file_open(model, &tf, &err))
        return ss_cli_fail("tensor", SS_EXIT_FAIL, &err);
    int rc = SS_EXIT_OK;
    if (list) {
        ss_list_tensors(&tf);
    } else {
        const ss_tensor *t = ss_tensor_file_find(&tf, name);
        if (!t) {
            snprintf(err.msg, sizeof err.msg, "%s: no tensor named %s (see --list)", model, name);
            rc = ss_cli_fail("tensor", SS_EXIT_FAIL, &err);
        } else if (ss_write_npy(out, t, &err)) {
            rc = ss_cli_fail("tensor", SS_EXIT_FAIL, &err);
        }
    }
    ss_tensor_file_close(&tf);
    return rc;
}
