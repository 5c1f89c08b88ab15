/* Decompression time and calls at cold start: uprobes and uretprobes on the
 * decoder entry points of zlib, zstd, liblzma, libbz2 and lz4 (and any extra
 * (binary, symbol) pairs configured). Compression is never counted.
 *
 * fntax:map decomp  hash  fntax_decomp_key  fntax_decomp_val
 *
 * Only the outermost decoder call of a thread is timed (uncompress() calls
 * inflate(), ZSTD_decompress() calls ZSTD_decompressDCtx()): a per-thread
 * depth in decomp_active makes nested calls count once, under the library
 * of the outermost call. liblzma's lzma_code() serves encoders and decoders
 * alike, so it counts only for streams set up by a *_decoder() call (the
 * lzma_decoders set, cleared by lzma_end() or an encoder set-up).
 *
 * A uprobe program cannot tell which library it is attached to, so each
 * library id gets its own tiny entry program (FNTAX_DECOMP_LIB below); the
 * ids are enum fntax_decomp_lib (fntax.h), used by profiler/bpf/decompress_targets.py.
 */
#include "fntax.h"

#ifndef FNTAX_MAX_DECOMP
#define FNTAX_MAX_DECOMP 16384
#endif

struct fntax_decomp_active {
    u64 enter_ns;
    u64 enter_cpu_clock_ns;      /* the thread's on-CPU clock at entry */
    u32 lib;
    u32 depth;
};

BPF_HASH(decomp, struct fntax_decomp_key, struct fntax_decomp_val, FNTAX_MAX_DECOMP);
BPF_HASH(decomp_active, u32, struct fntax_decomp_active, FNTAX_MAX_TASKS);
BPF_HASH(lzma_decoders, u64, u8, FNTAX_MAX_DECOMP);


static __always_inline int fntax_decomp_enter(u32 lib)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_task *t = tasks.lookup(&tid);
    if (!t && !FNTAX_TRACE_ALL)
        return 0;
    struct fntax_decomp_active *active = decomp_active.lookup(&tid);
    if (active) {
        active->depth += 1;
        return 0;
    }
    u64 now = bpf_ktime_get_ns();
    struct fntax_decomp_active fresh = {.enter_ns = now, .enter_cpu_clock_ns = fntax_thread_oncpu(tid, t, now),
                                        .lib = lib, .depth = 1};
    if (decomp_active.update(&tid, &fresh) != 0) {
        fntax_count_error(FNTAX_ERR_DECOMP_ACTIVE);
        return 0;
    }
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (cpu)
        cpu->in_decoder = 1;
    return 0;
}

int fntax_decomp_return(struct pt_regs *ctx)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct fntax_decomp_active *active = decomp_active.lookup(&tid);
    if (!active)
        return 0;
    if (active->depth > 1) {
        active->depth -= 1;
        return 0;
    }
    u32 proc_key = (u32)(id >> 32);
    fntax_proc_lookup(&proc_key);
    struct fntax_decomp_key key = {.tgid = proc_key, .lib = active->lib};
    u64 spent = now - active->enter_ns;
    struct fntax_task *t = tasks.lookup(&tid);
    u64 oncpu = fntax_thread_oncpu(tid, t, now);
    u64 spent_oncpu = oncpu > active->enter_cpu_clock_ns ? oncpu - active->enter_cpu_clock_ns : 0;
    if (spent_oncpu > spent)
        spent_oncpu = spent;
    decomp_active.delete(&tid);
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (cpu)
        cpu->in_decoder = 0;
    struct fntax_decomp_val *total = decomp.lookup(&key);
    if (total) {
        __sync_fetch_and_add(&total->count, 1);
        __sync_fetch_and_add(&total->ns, spent);
        __sync_fetch_and_add(&total->cpu_ns, spent_oncpu);
    } else {
        struct fntax_decomp_val fresh = {.count = 1, .ns = spent, .cpu_ns = spent_oncpu};
        if (decomp.update(&key, &fresh) != 0)
            fntax_count_error(FNTAX_ERR_DECOMP);
    }
    return 0;
}

#define FNTAX_DECOMP_LIB(N) \
    int fntax_decomp_enter_##N(struct pt_regs *ctx) { return fntax_decomp_enter(N); }

FNTAX_DECOMP_LIB(0)
FNTAX_DECOMP_LIB(1)
FNTAX_DECOMP_LIB(2)
FNTAX_DECOMP_LIB(3)
FNTAX_DECOMP_LIB(4)
FNTAX_DECOMP_LIB(5)
FNTAX_DECOMP_LIB(6)
FNTAX_DECOMP_LIB(7)
FNTAX_DECOMP_LIB(8)
FNTAX_DECOMP_LIB(9)
FNTAX_DECOMP_LIB(10)
FNTAX_DECOMP_LIB(11)
FNTAX_DECOMP_LIB(12)

/* lzma_code(strm, action): a decoder only when strm was set up as one. */
int fntax_lzma_code_enter(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 strm = PT_REGS_PARM1(ctx);
    if (lzma_decoders.lookup(&strm))
        return fntax_decomp_enter(FNTAX_LIB_LZMA);
    /* Not a decoder: keep the shared return probe balanced if a decoder
     * call is already open on this thread. */
    struct fntax_decomp_active *active = decomp_active.lookup(&tid);
    if (active)
        active->depth += 1;
    return 0;
}

/* lzma_*_decoder(strm, ...): remember the stream. */
int fntax_lzma_decoder_init(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!FNTAX_TRACE_ALL && !tasks.lookup(&tid))
        return 0;
    u64 strm = PT_REGS_PARM1(ctx);
    u8 one = 1;
    if (lzma_decoders.update(&strm, &one) != 0)
        fntax_count_error(FNTAX_ERR_DECOMP);
    return 0;
}

/* lzma_end(strm) or an encoder set-up on strm: it is no decoder (any more). */
int fntax_lzma_forget(struct pt_regs *ctx)
{
    u64 strm = PT_REGS_PARM1(ctx);
    lzma_decoders.delete(&strm);
    return 0;
}
