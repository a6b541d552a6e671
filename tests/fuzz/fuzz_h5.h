/* fuzz_h5.h - a well-formed HDF5 file built from fuzz input (a "recipe"),
 * so the project's HDF5 readers meet hostile content (names, types, shapes,
 * values, missing or extra objects) through a container libhdf5 can read.
 * Raw byte mutation of the container itself reaches libhdf5's own parser,
 * which in Debian's 1.10.8 has use-after-free and endless loops on damaged
 * files that no reader can guard against (docs/testing.md, "Robustness").
 *
 * A recipe is a sequence of objects, read until the input ends:
 *   u8 kind      bit 0: dataset (else an attribute of "/"); bit 1: chunked;
 *                bit 2: first axis extendible (chunked)
 *   u8 n, name[n]   (n <= 63; "/" in a dataset name creates groups)
 *   u8 type      % 9: int8 uint8 int32 int64 float32 float64 float16
 *                vlen-utf8-string fixed-string (then u8 length - 1)
 *   u8 rank      % 4 (an attribute of rank 0 is a scalar)
 *   u16 dims[rank]  little-endian; more than 2^16 elements skip the object
 *   values       elements back to back (strings: u8 length, bytes); missing
 *                bytes read as zeros
 * tests/fuzz/make_seeds.py (h5_recipe) writes recipes of valid files. */
#ifndef SS_FUZZ_H5_H
#define SS_FUZZ_H5_H

#include <stddef.h>
#include <stdint.h>

/* Writes the file; aborts only if HDF5 cannot create it at all. */
void fuzz_h5_build(const uint8_t *data, size_t size, const char *path);

#endif
