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
 * proc_syscalls when the slot is folded (switch-out or exit). With the KVM
 * family built, a tracked thread's ioctls also go to its KVM_RUN hook: the
 * request read from the registers at enter, and at exit a tasks lookup
 * unless the thread's KVM state is already in the slot.
 */
#include "fntax.h"

#if FNTAX_EVENTS && defined(FNTAX_ENV_NAME)
/* The agent names a function by an environment variable. A process that
 * receives it at its own execve and lives a millisecond is gone before user
 * space could read /proc/PID/environ, so the value is taken from execve's
 * envp here (user memory, read with bpf_probe_read_user) and handed to the
 * exec event. Only execve/execveat pay for this. */
#define FNTAX_ENV_SCAN 256  /* envp entries looked at: real environments run to 100+ */
struct fntax_env_scratch {
    char value[FNTAX_ENV_VALUE];
    char entry[sizeof(FNTAX_ENV_NAME) + FNTAX_ENV_VALUE];
};
BPF_PERCPU_ARRAY(env_scratch, struct fntax_env_scratch, 1);
/* By tid, from execve's entry to the exec it ends in. An execve that fails
 * leaves its entry behind: the tid's next execve drops it before it scans
 * (else a later exec under a reused tid whose environment lacks the
 * variable took the dead one's value), a tracked task's failed execve drops
 * it at exit, and the LRU keeps the rest (a tid that never execs again)
 * from filling the map, which would lose every exec's value after it. */
BPF_TABLE("lru_hash", u32, struct fntax_env_scratch, exec_env, 1024);

/* Syscall numbers and argument registers differ by architecture: the loader
 * passes profiler.bpf.arch.probe_cflags(). Until it does, x86_64's. */
#if !defined(FNTAX_ARCH_X86_64) && !defined(FNTAX_ARCH_ARM64) && !defined(FNTAX_NR_EXECVE)
#define FNTAX_ARCH_X86_64 1
#endif
#ifndef FNTAX_NR_EXECVE
#define FNTAX_NR_EXECVE 59
#endif
#ifndef FNTAX_NR_EXECVEAT
#define FNTAX_NR_EXECVEAT 322
#endif
/* envp is execve's 3rd argument and execveat's 4th. */
#if defined(FNTAX_ARCH_X86_64)
#define FNTAX_EXECVE_ENVP(regs) ((regs)->dx)
#define FNTAX_EXECVEAT_ENVP(regs) ((regs)->r10)
#elif defined(FNTAX_ARCH_ARM64)
#define FNTAX_EXECVE_ENVP(regs) ((regs)->regs[2])
#define FNTAX_EXECVEAT_ENVP(regs) ((regs)->regs[3])
#else
#error "fntax: no execve argument registers for this architecture (see profiler/bpf/arch.py)"
#endif

static __always_inline void fntax_scan_env(struct bpf_raw_tracepoint_args *ctx, long nr, u32 tid)
{
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    u64 envp = 0;
    if (nr == FNTAX_NR_EXECVE)   /* execve(filename, argv, envp) */
        bpf_probe_read_kernel(&envp, sizeof(envp), &FNTAX_EXECVE_ENVP(regs));
    else                         /* execveat(dirfd, filename, argv, envp, flags) */
        bpf_probe_read_kernel(&envp, sizeof(envp), &FNTAX_EXECVEAT_ENVP(regs));
    int zero = 0;
    struct fntax_env_scratch *s = env_scratch.lookup(&zero);
    if (!s || !envp)
        return;
    const char name[] = FNTAX_ENV_NAME "=";
#pragma clang loop unroll(disable)
    for (int i = 0; i < FNTAX_ENV_SCAN; i++) {
        u64 str = 0;
        if (bpf_probe_read_user(&str, sizeof(str), (void *)(envp + i * 8)) || !str)
            return;
        if (bpf_probe_read_user_str(s->entry, sizeof(s->entry), (void *)str) < (int)sizeof(name))
            continue;
        int same = 1;
#pragma unroll
        for (int j = 0; j < sizeof(name) - 1; j++) {
            if (s->entry[j] != name[j]) {
                same = 0;
                break;
            }
        }
        if (!same)
            continue;
        bpf_probe_read_kernel_str(s->value, sizeof(s->value), s->entry + sizeof(name) - 1);
        exec_env.update(&tid, s);
        return;
    }
}
#endif

#if FNTAX_KVM
/* The KVM family's KVM_RUN bookkeeping (probes/kvm.bpf.c, later in the
 * module): a tracked thread's ioctl enter and exit. Riding on these programs
 * instead of the syscalls:sys_*_ioctl tracepoints keeps every syscall on the
 * host off the kernel's slow syscall-tracing path (issue 13). */
static __always_inline void fntax_kvm_ioctl_enter(struct bpf_raw_tracepoint_args *ctx, u32 tid, u64 now);
static __always_inline void fntax_kvm_ioctl_exit(struct fntax_cpu *cpu, u32 tid, u64 now);
#define FNTAX_KVM_RUN_HOOKED 1   /* kvm.bpf.c needs no raw programs of its own */
#endif

RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
#if FNTAX_EVENTS && defined(FNTAX_ENV_NAME)
    long id = (long)ctx->args[1];
    if (id == FNTAX_NR_EXECVE || id == FNTAX_NR_EXECVEAT) {
        exec_env.delete(&tid);
        fntax_scan_env(ctx, id, tid);
    }
#endif
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    /* args: (struct pt_regs *regs, long id) */
    u64 now = bpf_ktime_get_ns();
    cpu->sys_nr = (u32)ctx->args[1];
    cpu->sys_enter_ns = now;
#if FNTAX_KVM
    if ((long)ctx->args[1] == FNTAX_NR_IOCTL)
        fntax_kvm_ioctl_enter(ctx, tid, now);
#endif
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload || cpu->sys_nr == FNTAX_NO_SYSCALL)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 spent = now - cpu->sys_enter_ns;
    u32 nr = cpu->sys_nr;
    cpu->sys_nr = FNTAX_NO_SYSCALL;
    cpu->delta.syscalls += 1;
    cpu->delta.syscall_ns += spent;
#if FNTAX_KVM
    if (nr == FNTAX_NR_IOCTL)
        fntax_kvm_ioctl_exit(cpu, tid, now);
#endif
#if FNTAX_EVENTS && defined(FNTAX_ENV_NAME)
    /* A successful exec consumed its entry already (sched_process_exec). */
    if (nr == FNTAX_NR_EXECVE || nr == FNTAX_NR_EXECVEAT)
        exec_env.delete(&tid);
#endif

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
