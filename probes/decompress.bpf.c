/* Decompression time (placeholder, replaced by the decompression work).
 *
 * fntax:map decomp  hash  fntax_decomp_key  fntax_sys_val
 */
#include "fntax.h"

#ifndef FNTAX_MAX_DECOMP
#define FNTAX_MAX_DECOMP 16384
#endif

BPF_HASH(decomp, struct fntax_decomp_key, struct fntax_sys_val, FNTAX_MAX_DECOMP);
