// zlib, for reading the gzip-compressed data sets (IDX .gz, CSV .gz) from Swift.
#ifndef LOCUS_CZLIB_SHIM_H
#define LOCUS_CZLIB_SHIM_H
#include <zlib.h>
// inflateInit2 is a macro; Swift needs a function.
static inline int locus_inflate_init_gzip(z_stream *s) { return inflateInit2(s, 15 + 32); }
#endif
