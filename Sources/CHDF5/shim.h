// Swift cannot import HDF5's type and property-list macros (they expand to H5OPEN + a global id),
// and reading the H5T_*_g globals directly is an error in Swift 6 mode. These inline functions
// return them instead. Also: the error-stack walk, which needs a C callback.
#ifndef LOCUS_CHDF5_SHIM_H
#define LOCUS_CHDF5_SHIM_H
#include <hdf5.h>
#include <string.h>

static inline hid_t locus_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t locus_H5S_ALL(void) { return H5S_ALL; }
static inline hid_t locus_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline size_t locus_H5T_VARIABLE(void) { return H5T_VARIABLE; }

static inline unsigned locus_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned locus_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline unsigned locus_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned locus_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }

static inline hid_t locus_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t locus_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t locus_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t locus_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline hid_t locus_H5P_ATTRIBUTE_CREATE(void) { return H5P_ATTRIBUTE_CREATE; }

static inline hid_t locus_H5T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t locus_H5T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t locus_H5T_STD_I8LE(void) { return H5T_STD_I8LE; }
static inline hid_t locus_H5T_STD_I16LE(void) { return H5T_STD_I16LE; }
static inline hid_t locus_H5T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t locus_H5T_STD_I64LE(void) { return H5T_STD_I64LE; }
static inline hid_t locus_H5T_STD_U8LE(void) { return H5T_STD_U8LE; }
static inline hid_t locus_H5T_STD_U16LE(void) { return H5T_STD_U16LE; }
static inline hid_t locus_H5T_STD_U32LE(void) { return H5T_STD_U32LE; }
static inline hid_t locus_H5T_STD_U64LE(void) { return H5T_STD_U64LE; }
static inline hid_t locus_H5T_C_S1(void) { return H5T_C_S1; }

static inline hid_t locus_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t locus_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t locus_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t locus_H5T_NATIVE_INT16(void) { return H5T_NATIVE_INT16; }
static inline hid_t locus_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t locus_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t locus_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t locus_H5T_NATIVE_UINT16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t locus_H5T_NATIVE_UINT32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t locus_H5T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }

// Collects the current thread's HDF5 error stack, innermost error first, as
// "message (function); message (function); ..." into `buf`. Returns the number of records.
typedef struct { char *buf; size_t cap; size_t len; int count; } locus_h5e_collector;

static herr_t locus_h5e_collect(unsigned n, const H5E_error2_t *err, void *data) {
    (void)n;
    locus_h5e_collector *c = (locus_h5e_collector *)data;
    char minor[128] = {0};
    H5Eget_msg(err->min_num, NULL, minor, sizeof minor);
    const char *desc = err->desc ? err->desc : "";
    int wrote = snprintf(c->buf + c->len, c->len < c->cap ? c->cap - c->len : 0,
                         "%s%s%s%s (%s)", c->count ? "; " : "", desc,
                         (desc[0] && minor[0]) ? ": " : "", minor,
                         err->func_name ? err->func_name : "?");
    if (wrote > 0) { c->len += (size_t)wrote; if (c->len >= c->cap) c->len = c->cap ? c->cap - 1 : 0; }
    c->count++;
    return c->count >= 4 ? 1 : 0;   // the innermost few records say what went wrong; the rest is call chain
}

static inline int locus_h5_error_stack(char *buf, size_t cap) {
    locus_h5e_collector c = { buf, cap, 0, 0 };
    if (cap) buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, locus_h5e_collect, &c);
    H5Eclear2(H5E_DEFAULT);
    return c.count;
}

static inline void locus_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

// A variable-length string read returns a heap pointer that HDF5 owns the allocator of.
static inline void locus_h5_free(void *p) { H5free_memory(p); }
#endif
