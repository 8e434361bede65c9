// libdeflate: whole-buffer zlib decompression about twice as fast as zlib's inflate, for the
// deflated packed-bit chunks of masks and task vectors (RawChunkReader).
#ifndef LOCUS_CDEFLATE_SHIM_H
#define LOCUS_CDEFLATE_SHIM_H
#include <libdeflate.h>
#endif
