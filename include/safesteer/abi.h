/* abi.h - what foreign-function bindings need from the library: the size
 * of every public struct they mirror, so the Python package
 * (analysis/safesteer, ctypes) checks its mirrors against the library it
 * loads instead of corrupting memory after a header changes, and a way to
 * free what the library allocated. */
#ifndef SAFESTEER_ABI_H
#define SAFESTEER_ABI_H

#include <stddef.h>

/* sizeof of the named public struct ("ss_gen_request", ...), 0 when the
 * name is not one the table knows. */
size_t ss_abi_sizeof(const char *struct_name);
/* The library's version ("0.1.0") and whether it has the CUDA engine. */
const char *ss_abi_version(void);
int ss_abi_has_cuda(void);
/* free() for memory the library returned (token ids, decoded text). */
void ss_abi_free(void *p);

#endif
