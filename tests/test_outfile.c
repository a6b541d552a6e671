/* test_outfile.c - write-then-rename outputs (host/util/outfile.c): a completed
 * write replaces the destination; a failed one, or one whose rename is
 * refused, leaves the existing output byte for byte and no temporary file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/h5io.h"
#include "util/outfile.h"

static char dir[] = "/tmp/ss_outfile_XXXXXX";

static void setup(void) { cr_assert_not_null(mkdtemp(dir)); }

static void teardown(void)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(outfile, .init = setup, .fini = teardown);

/* path = dir/name, tmp = the temporary name ss_outfile gives it */
static void names(const char *name, char path[300], char tmp[310])
{
    snprintf(path, 300, "%s/%s", dir, name);
    snprintf(tmp, 310, "%s.tmp", path);
}

static void put_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_text(const char *path, const char *text)
{
    char buf[256] = {0};
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s missing", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert_eq(n, strlen(text));
    cr_assert_str_eq(buf, text);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

Test(outfile, completed_write_replaces_destination)
{
    char path[300], tmp[310];
    names("out.txt", path, tmp);
    put_text(path, "old contents\n");
    ss_outfile o;
    ss_error err = {.msg = ""};
    FILE *f = ss_outfile_fopen(&o, path, &err);
    cr_assert_not_null(f, "%s", err.msg);
    fputs("new\n", f);
    assert_text(path, "old contents\n"); /* not visible before the end */
    cr_assert_eq(ss_outfile_fclose(&o, f, 0, &err), 0, "%s", err.msg);
    assert_text(path, "new\n");
    cr_assert(!exists(tmp));
}

Test(outfile, failed_write_keeps_destination)
{
    char path[300], tmp[310];
    names("out.txt", path, tmp);
    put_text(path, "old contents\n");
    ss_outfile o;
    ss_error err = {.msg = ""};
    FILE *f = ss_outfile_fopen(&o, path, &err);
    cr_assert_not_null(f);
    fputs("half a fi", f);
    ss_fail(&err, "row 7: value nan");
    cr_assert_eq(ss_outfile_fclose(&o, f, -1, &err), -1);
    assert_text(path, "old contents\n");
    cr_assert(!exists(tmp));
    char want[400];
    snprintf(want, sizeof want, "%s: row 7: value nan", path);
    cr_assert_str_eq(err.msg, want);
}

Test(outfile, refused_rename_keeps_destination)
{
    /* a directory cannot be replaced by a file */
    char path[300], tmp[310];
    names("taken", path, tmp);
    cr_assert_eq(mkdir(path, 0700), 0);
    ss_outfile o;
    ss_error err = {.msg = ""};
    FILE *f = ss_outfile_fopen(&o, path, &err);
    cr_assert_not_null(f);
    fputs("data", f);
    cr_assert_eq(ss_outfile_fclose(&o, f, 0, &err), -1);
    cr_assert(strstr(err.msg, "cannot rename"), "%s", err.msg);
    cr_assert(!exists(tmp));
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
}

Test(outfile, hdf5_output_appears_only_when_closed)
{
    char path[300], tmp[310];
    names("out.h5", path, tmp);
    ss_outfile o;
    ss_error err = {.msg = ""};
    hid_t f = ss_h5_out_create(&o, path, &err);
    cr_assert_geq(f, 0, "%s", err.msg);
    cr_assert_eq(ss_h5_attr_set_i64(f, "answer", 42, &err), 0);
    cr_assert(!exists(path));
    cr_assert_eq(ss_h5_out_close(&o, f, 0, &err), 0, "%s", err.msg);
    cr_assert(!exists(tmp));
    hid_t r = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(r, 0);
    int64_t v = 0;
    cr_assert_eq(ss_h5_attr_get_i64(r, "answer", &v, &err), 0);
    cr_assert_eq(v, 42);
    H5Fclose(r);

    /* a failed rewrite leaves that file readable as it was */
    f = ss_h5_out_create(&o, path, &err);
    cr_assert_geq(f, 0);
    ss_h5_attr_set_i64(f, "answer", 43, &err);
    ss_fail(&err, "refused");
    cr_assert_eq(ss_h5_out_close(&o, f, -1, &err), -1);
    cr_assert(!exists(tmp));
    r = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_eq(ss_h5_attr_get_i64(r, "answer", &v, &err), 0);
    cr_assert_eq(v, 42);
    H5Fclose(r);
}

Test(outfile, overlong_path_refused)
{
    char path[5000];
    memset(path, 'a', sizeof path - 1);
    path[sizeof path - 1] = 0;
    ss_outfile o;
    ss_error err = {.msg = ""};
    cr_assert_null(ss_outfile_fopen(&o, path, &err));
    cr_assert(strstr(err.msg, "output path too long"), "%s", err.msg);
}
