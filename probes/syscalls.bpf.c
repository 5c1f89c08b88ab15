/* Syscall counts and times, per process and per syscall number.
 *
 * fntax:map tasks          hash   u32                  fntax_task
 * fntax:map procs          hash   u32                  fntax_proc
 * fntax:map proc_syscalls  hash   fntax_sys_key        fntax_sys_val
 * fntax:map cpu_state      percpu_array u32            fntax_cpu
 * fntax:map cpu_syscalls   percpu_array u32            fntax_sys_val
 * fntax:map errors         array  u32                  u64
 * fntax:map track_gen      array  u32                  u32
 *
 * The hot path (every syscall on the host) touches only the per-CPU slot and
 * the per-CPU per-number array: no hash lookups. Per-number figures reach
 * proc_syscalls when the slot is folded (switch-out or exit).
 */
#include "fntax.h"

RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    /* args: (struct pt_regs *regs, long id) */
    cpu->sys_nr = (u32)ctx->args[1];
    cpu->sys_enter_ns = bpf_ktime_get_ns();
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload || cpu->sys_nr == FNTAX_NO_SYSCALL)
        return 0;
    u64 spent = bpf_ktime_get_ns() - cpu->sys_enter_ns;
    u32 nr = cpu->sys_nr;
    cpu->sys_nr = FNTAX_NO_SYSCALL;
    cpu->delta.syscalls += 1;
    cpu->delta.syscall_ns += spent;

    if (nr >= FNTAX_SYSCALL_SLOTS)
        nr = FNTAX_SYSCALL_SLOTS - 1;
    struct fntax_sys_val *per_nr = cpu_syscalls.lookup(&nr);
    if (!per_nr)
        return 0;
    if (per_nr->count == 0) {
        u32 n = cpu->ndirty;
        if (n < FNTAX_DIRTY_SLOTS) {
            cpu->dirty[n] = nr;
            cpu->ndirty = n + 1;
        } else {
            cpu->overflow = 1;
        }
    }
    per_nr->count += 1;
    per_nr->ns += spent;
    return 0;
}
