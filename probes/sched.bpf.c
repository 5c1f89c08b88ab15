/* Scheduling: context switches (voluntary / involuntary), on-CPU time,
 * run-queue wait (and the part of it spent on an idle CPU), each CPU's idle
 * clock, the workload's timeline, and the process tree (fork, exec, exit).
 *
 * fntax:map tasks      hash   u32   fntax_task
 * fntax:map procs      hash   u32   fntax_proc
 * fntax:map cpu_state  percpu_array u32 fntax_cpu
 * fntax:map cpu_idle   array  u32   fntax_idle
 * fntax:map? timelines hash   u32   fntax_timeline
 *
 * Run-queue wait runs from a wake-up (or a preemption) to the next time the
 * task is switched in. On-CPU time runs from switch-in to switch-out.
 */
#include "fntax.h"

/* A tracked task that was asleep becomes runnable, queued on `cpu_id`. */
static __always_inline void fntax_mark_runnable(u32 tid, u32 cpu_id, u64 now)
{
    struct fntax_task *t = tasks.lookup(&tid);
    /* Only a task asleep starts to wait: one still on its CPU (woken before
     * it got to sleep) or already queued is not woken again. */
    if (!t || t->tl_state != FNTAX_ASLEEP)
        return;
    fntax_wait_begin(t, cpu_id, now);
    fntax_task_state(t, FNTAX_RUNNABLE, now);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    fntax_mark_runnable((u32)args->pid, (u32)args->target_cpu, bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    fntax_mark_runnable((u32)args->pid, (u32)args->target_cpu, bpf_ktime_get_ns());
    return 0;
}

/* A waiting task moved to another CPU's queue: carry the idle time so far. */
TRACEPOINT_PROBE(sched, sched_migrate_task)
{
    u32 tid = (u32)args->pid;
    struct fntax_task *t = tasks.lookup(&tid);
    if (!t || !t->wait_since_ns)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 clock = fntax_idle_clock(t->wait_cpu, now);
    if (clock > t->wait_idle_mark_ns)
        t->wait_idle_ns += clock - t->wait_idle_mark_ns;
    t->wait_cpu = (u32)args->dest_cpu;
    t->wait_idle_mark_ns = fntax_idle_clock(t->wait_cpu, now);
    return 0;
}

static __always_inline void fntax_idle_switch(u32 prev, u32 next, u64 now)
{
    u32 cpu_id = bpf_get_smp_processor_id();
    struct fntax_idle *idle = cpu_idle.lookup(&cpu_id);
    if (!idle)
        return;
    if (prev == 0 && idle->idle) {
        if (now > idle->since_ns)
            idle->total_ns += now - idle->since_ns;
        idle->idle = 0;
    }
    if (next == 0) {
        idle->since_ns = now;
        idle->idle = 1;
    }
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    u32 prev = (u32)args->prev_pid;
    u32 next = (u32)args->next_pid;
    int zero = 0;
    fntax_idle_switch(prev, next, now);
    struct fntax_cpu *cpu = cpu_state.lookup(&zero);
    if (!cpu)
        return 0;

    /* A tracked task leaves a CPU that, as far as this probe saw, ran
     * another task since (oncpu_since_ns is 0 until the first switch-in), and
     * made no event there that adopted the slot: its switch-in went unseen.
     * It came after the last switch-in seen here and after the task last
     * left a CPU or began to wait, so it ran from the latest of those at
     * most, and a wait it was in lasted at least until then: the slot is its
     * own from then, and its switch-out below counts as any other (a sleep
     * is never taken for a wait; its time here plus its wait stay whole). */
    if (cpu->tid != prev && cpu->oncpu_since_ns) {
        struct fntax_task *unseen = tasks.lookup(&prev);
        if (unseen) {
            if (cpu->ndirty || cpu->overflow)
                fntax_drop_pending(cpu);
            cpu->tid = prev;
            cpu->workload = unseen->workload;
            cpu->sys_nr = FNTAX_NO_SYSCALL;
            cpu->in_decoder = unseen->in_decoder;
            cpu->exiting = unseen->exiting;
            u64 from = cpu->oncpu_since_ns;
            if (unseen->offcpu_since_ns > from)
                from = unseen->offcpu_since_ns;
            if (unseen->wait_since_ns > from)
                from = unseen->wait_since_ns;
            cpu->oncpu_since_ns = from;
            fntax_count_unseen_switch();
            fntax_wait_end(cpu, unseen, from, now);
        }
    }

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
            t->in_decoder = cpu->in_decoder;
            if (preempted)
                fntax_wait_begin(t, bpf_get_smp_processor_id(), now);
            else
                t->wait_since_ns = 0;
            fntax_task_state(t, preempted ? FNTAX_RUNNABLE : FNTAX_ASLEEP, now);
        } else {
            /* Tracked, but its entry is gone: it only leaves the CPU. */
            fntax_timeline(cpu->workload, now, -1, 0, 0);
        }
        fntax_fold(cpu, (u32)(bpf_get_current_pid_tgid() >> 32));
        /* Its last switch-out: the task is gone, its entry can go (kept
         * until now so the exit path's own switches are still counted). */
        if (args->prev_state & FNTAX_EXIT_STATE_MASK)
            tasks.delete(&prev);
    }
#if FNTAX_TRACE_ALL
    else if (prev != 0 && cpu->tid == prev && !tasks.lookup(&prev)) {
        /* System-wide: a task we had not met yet. (One with an entry and
         * workload 0 is a start gate `fntax profile` armed through the
         * agent: not counted until its exec, and kept so.) */
        struct fntax_task fresh = {.workload = 1, .sys_nr = FNTAX_NO_SYSCALL};
        if (tasks.update(&prev, &fresh) != 0)
            fntax_count_error(FNTAX_ERR_TASKS);
    }
#endif

    /* Switch-in of next: the slot becomes next's, with nothing pending
     * (the switch-out above folded it; anything left is dropped). */
    if (cpu->ndirty || cpu->overflow)
        fntax_drop_pending(cpu);
    cpu->tid = next;
    cpu->workload = 0;
    cpu->sys_nr = FNTAX_NO_SYSCALL;
    cpu->oncpu_since_ns = now;
    cpu->in_decoder = 0;
    cpu->exiting = 0;
    u32 *gen = track_gen.lookup(&zero);
    cpu->track_gen = gen ? *gen : 0;
    struct fntax_task *t = tasks.lookup(&next);
    if (!t) {
        if (FNTAX_TRACE_ALL && next != 0)
            cpu->workload = 1;
        return 0;
    }
    cpu->workload = t->workload;
    cpu->in_decoder = t->in_decoder;
    cpu->exiting = t->exiting;
    fntax_wait_end(cpu, t, now, now);
    if (t->sys_nr != FNTAX_NO_SYSCALL && t->workload) {
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
    struct fntax_task *pt = tasks.lookup(&parent);
    u32 workload = pt ? pt->workload : (FNTAX_TRACE_ALL ? 1 : 0);
    if (!workload)
        return 0;
    struct fntax_task fresh = {.workload = workload, .sys_nr = FNTAX_NO_SYSCALL};
    if (tasks.update(&child, &fresh) != 0)
        fntax_count_error(FNTAX_ERR_TASKS);
    else
        fntax_timeline(workload, bpf_ktime_get_ns(), 0, 0, 1);
    return 0;
}

#if FNTAX_EVENTS
/* The agent hears of new processes, not new threads: a thread belongs to a
 * process already attributed, and an event per thread (plus the /proc read
 * user space needed to tell) was a third of the agent's cost under churn.
 * task_newtask fires in the parent, before the child can run, and says
 * whether the clone made a thread. */
#define FNTAX_CLONE_THREAD 0x00010000
TRACEPOINT_PROBE(task, task_newtask)
{
    if (args->clone_flags & FNTAX_CLONE_THREAD)
        return 0;
    u32 child = (u32)args->pid;
    /* The pid's last owner is gone (its pid was freed) but user space has
     * not read its entries yet: keep the new process's apart. */
    struct fntax_proc *old = procs.lookup(&child);
    if (old)
        old->exited = FNTAX_SUPERSEDED;
    fntax_emit(args, FNTAX_EV_FORK, child, (u32)(bpf_get_current_pid_tgid() >> 32));
    return 0;
}
#endif

#if FNTAX_TIMELINE
/* The workload's first exec: its timeline starts with this one task on a CPU. */
static __always_inline void fntax_timeline_start(u32 workload, u64 now)
{
    struct fntax_timeline *tl = timelines.lookup(&workload);
    if (!tl || tl->start_ns)
        return;
    tl->start_ns = now;
    tl->since_ns = now;
    tl->running = 1;
    tl->runnable = 0;
    tl->live = 1;
}
#endif

/* exec and exit run in process context with interrupts on, and fold: as
 * perf-event tracepoint programs they held the kernel's per-CPU "a BPF
 * program runs" flag long enough for an interrupt's wake-ups and softirqs to
 * find it set, and the kernel skipped our programs there (recursion misses:
 * a lost wake-up is a lost run-queue wait). Raw tracepoint programs are only
 * kept from recursing into themselves. Their arguments are not read: the
 * task is the current one. */
RAW_TRACEPOINT_PROBE(sched_process_exec)
{
    /* Refresh the process name: the fold creates procs entries with the comm
     * of the moment, which before exec is the parent's. */
    u64 now = bpf_ktime_get_ns();
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 tgid = (u32)(bpf_get_current_pid_tgid() >> 32);
#if FNTAX_EVENTS && defined(FNTAX_ENV_NAME)
    /* The exec succeeded: hand over what its envp said (see syscalls.bpf.c). */
    struct fntax_env_scratch *env = exec_env.lookup(&tid);
    if (env) {
        struct fntax_event ev = {.type = FNTAX_EV_EXEC, .pid = tgid, .has_env = 1, .ts_ns = now};
        bpf_probe_read_kernel_str(ev.env_value, sizeof(ev.env_value), env->value);
        events.perf_submit(ctx, &ev, sizeof(ev));
        exec_env.delete(&tid);
    } else {
        fntax_emit(ctx, FNTAX_EV_EXEC, tgid, 0);
    }
#else
    fntax_emit(ctx, FNTAX_EV_EXEC, tgid, 0);
#endif
    struct fntax_task *t = tasks.lookup(&tid);
    if (t && t->arm_workload) {
        /* fntax profile's start gate: the function begins here, so what the
         * gate did before this exec is not the function's. */
        t->workload = t->arm_workload;
        t->arm_workload = 0;
        t->tl_state = FNTAX_ON_CPU;
        int zero = 0;
        struct fntax_cpu *slot = cpu_state.lookup(&zero);
        if (slot) {
            slot->tid = tid;
            slot->workload = t->workload;
            fntax_drop_pending(slot);
            slot->sys_nr = FNTAX_NO_SYSCALL;
            slot->oncpu_since_ns = now;
        }
#if FNTAX_TIMELINE
        fntax_timeline_start(t->workload, now);
#endif
    }
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_fold(cpu, tgid);
    u32 key = tgid;
    struct fntax_proc *p = fntax_proc_lookup(&key);
    if (p)
        bpf_get_current_comm(&p->comm, sizeof(p->comm));
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 tgid = (u32)(id >> 32);
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_timeline(cpu->workload, bpf_ktime_get_ns(), 0, 0, -1);
    fntax_fold(cpu, tgid);
    if (tid == tgid) {
        u32 key = tgid;
        struct fntax_proc *p = fntax_proc_lookup(&key);
        if (p)
            p->exited = FNTAX_EXITED;
        /* No exit event: the fold hears of the exit from `exited`. */
        cpu->exiting = 1;
        struct fntax_task *t = tasks.lookup(&tid);
        if (t)
            t->exiting = 1;  /* for its switch-ins until it is gone */
    }
    /* The thread's last switch-out (sched_switch) deletes its tasks entry,
     * keeping the map bounded under churn. */
    return 0;
}
