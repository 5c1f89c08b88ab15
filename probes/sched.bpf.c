/* Scheduling: context switches (voluntary / involuntary), on-CPU time,
 * run-queue wait, and the process tree (fork, exec, exit).
 *
 * fntax:map tasks      hash   u32   fntax_task
 * fntax:map procs      hash   u32   fntax_proc
 * fntax:map cpu_state  percpu_array u32 fntax_cpu
 *
 * Run-queue wait runs from a wake-up (or a preemption) to the next time the
 * task is switched in. On-CPU time runs from switch-in to switch-out.
 */
#include "fntax.h"

static __always_inline void fntax_mark_runnable(u32 tid, u64 now)
{
    struct fntax_task *t = tasks.lookup(&tid);
    if (t && t->wait_since_ns == 0)
        t->wait_since_ns = now;
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    fntax_mark_runnable((u32)args->pid, bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    fntax_mark_runnable((u32)args->pid, bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    u32 prev = (u32)args->prev_pid;
    u32 next = (u32)args->next_pid;
    int zero = 0;
    struct fntax_cpu *cpu = cpu_state.lookup(&zero);
    if (!cpu)
        return 0;

    /* Switch-out, in prev's context. */
    if (cpu->tid == prev && cpu->workload) {
        int preempted = (args->prev_state & FNTAX_TASK_REPORT_MASK) == 0;
        cpu->delta.oncpu_ns += now - cpu->oncpu_since_ns;
        if (preempted)
            cpu->delta.involuntary_switches += 1;
        else
            cpu->delta.voluntary_switches += 1;
        struct fntax_task *t = tasks.lookup(&prev);
        if (t) {
            t->oncpu_ns += now - cpu->oncpu_since_ns;
            t->sys_nr = cpu->sys_nr;
            t->sys_enter_ns = cpu->sys_enter_ns;
            t->offcpu_since_ns = now;
            if (preempted && t->wait_since_ns == 0)
                t->wait_since_ns = now;
        }
        fntax_fold(cpu, (u32)(bpf_get_current_pid_tgid() >> 32));
    }
#if FNTAX_TRACE_ALL
    else if (prev != 0 && cpu->tid == prev) {
        /* System-wide: a task we had not met yet. */
        struct fntax_task fresh = {.workload = 1, .sys_nr = FNTAX_NO_SYSCALL};
        if (tasks.update(&prev, &fresh) != 0)
            fntax_count_error(FNTAX_ERR_TASKS);
    }
#endif

    /* Switch-in of next: the slot becomes next's. */
    cpu->tid = next;
    cpu->workload = 0;
    cpu->sys_nr = FNTAX_NO_SYSCALL;
    cpu->oncpu_since_ns = now;
    cpu->ndirty = 0;
    cpu->overflow = 0;
    u32 *gen = track_gen.lookup(&zero);
    cpu->track_gen = gen ? *gen : 0;
    struct fntax_task *t = tasks.lookup(&next);
    if (!t) {
        if (FNTAX_TRACE_ALL && next != 0)
            cpu->workload = 1;
        return 0;
    }
    cpu->workload = t->workload;
    if (t->wait_since_ns) {
        cpu->delta.runqueue_ns += now - t->wait_since_ns;
        t->wait_since_ns = 0;
    }
    if (t->sys_nr != FNTAX_NO_SYSCALL) {
        cpu->sys_nr = t->sys_nr;
        cpu->sys_enter_ns = t->sys_enter_ns;
        cpu->delta.syscall_offcpu_ns += now - t->offcpu_since_ns;
        t->sys_nr = FNTAX_NO_SYSCALL;
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = (u32)args->parent_pid;
    u32 child = (u32)args->child_pid;
    fntax_emit(args, FNTAX_EV_FORK, child, (u32)(bpf_get_current_pid_tgid() >> 32));
    struct fntax_task *pt = tasks.lookup(&parent);
    u32 workload = pt ? pt->workload : (FNTAX_TRACE_ALL ? 1 : 0);
    if (!workload)
        return 0;
    struct fntax_task fresh = {.workload = workload, .sys_nr = FNTAX_NO_SYSCALL};
    if (tasks.update(&child, &fresh) != 0)
        fntax_count_error(FNTAX_ERR_TASKS);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    /* Refresh the process name: the fold creates procs entries with the comm
     * of the moment, which before exec is the parent's. */
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 tgid = (u32)(bpf_get_current_pid_tgid() >> 32);
#if FNTAX_EVENTS && defined(FNTAX_ENV_NAME)
    /* The exec succeeded: hand over what its envp said (see syscalls.bpf.c). */
    struct fntax_env_scratch *env = exec_env.lookup(&tid);
    if (env) {
        struct fntax_event ev = {.type = FNTAX_EV_EXEC, .pid = tgid, .has_env = 1, .ts_ns = bpf_ktime_get_ns()};
        bpf_probe_read_kernel_str(ev.env_value, sizeof(ev.env_value), env->value);
        events.perf_submit(args, &ev, sizeof(ev));
        exec_env.delete(&tid);
    } else {
        fntax_emit(args, FNTAX_EV_EXEC, tgid, 0);
    }
#else
    fntax_emit(args, FNTAX_EV_EXEC, tgid, 0);
#endif
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_fold(cpu, tgid);
    struct fntax_proc *p = procs.lookup(&tgid);
    if (p)
        bpf_get_current_comm(&p->comm, sizeof(p->comm));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 tgid = (u32)(id >> 32);
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_fold(cpu, tgid);
    if (tid == tgid) {
        struct fntax_proc *p = procs.lookup(&tgid);
        if (p)
            p->exited = 1;
        fntax_emit(args, FNTAX_EV_EXIT, tgid, 0);
    }
    /* The thread's last switch-out still folds into procs through the slot;
     * its tasks entry can go now, keeping the map bounded under churn. */
    tasks.delete(&tid);
    return 0;
}
