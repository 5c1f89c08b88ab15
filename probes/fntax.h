/* Shared definitions for fntax's probe families.
 *
 * All families are compiled into one BPF module (profiler/bpf/loader.py), so the
 * maps declared here are shared by every family. The loader puts this header's
 * text first in the module (bcc only rewrites map declarations and
 * TRACEPOINT_PROBEs in the main text); the guard then turns each family's
 * own #include into a no-op.
 *
 * Rules, because the kernel headers on a function host rarely match the
 * running kernel: never read a kernel struct through a header layout. Use
 * tracepoint fields (bcc reads their format from tracefs), BPF helpers,
 * raw-tracepoint arguments that are plain values, and uprobe arguments.
 *
 * Hot path design: the task running on each CPU owns that CPU's `cpu_state`
 * slot. Syscalls, faults and interrupts only touch this per-CPU slot (array
 * lookups, no hash). The slot is folded into the per-process `procs` map when
 * its task is switched out or exits.
 *
 * Tunables come in only as -D flags (see profiler/bpf/loader.py):
 *   FNTAX_MAX_TASKS, FNTAX_MAX_PROCS, FNTAX_MAX_PROC_SYSCALLS, FNTAX_TRACE_ALL
 */
#ifndef FNTAX_H
#define FNTAX_H

#include <uapi/linux/ptrace.h>

#ifndef FNTAX_MAX_TASKS
#define FNTAX_MAX_TASKS 65536
#endif
#ifndef FNTAX_MAX_PROCS
#define FNTAX_MAX_PROCS 16384
#endif
#ifndef FNTAX_MAX_PROC_SYSCALLS
#define FNTAX_MAX_PROC_SYSCALLS 65536
#endif
#ifndef FNTAX_TRACE_ALL
#define FNTAX_TRACE_ALL 0
#endif
/* Process-tree events to user space (the agent attributes at fork/exec). */
#ifndef FNTAX_EVENTS
#define FNTAX_EVENTS 0
#endif

/* Syscall numbers at or above this land in the last bucket ("other"). */
#define FNTAX_SYSCALL_SLOTS 512
/* Syscall numbers touched since the last fold; past this, fold scans all. */
#define FNTAX_DIRTY_SLOTS 16
#define FNTAX_NO_SYSCALL 0xffffffffu

/* ---- KVM slots (kvm.bpf.c; label names in profiler/bpf/kvm_names.py) ----
 * One per-process table of {count, ns} indexed by slot: VM exit reasons
 * (VMX basic reasons; SVM codes folded onto them; last = other), then
 * userspace exit reasons (KVM_EXIT_*; other; error), then port buckets. */
#define FNTAX_KVM_EXIT_SLOTS 96
#define FNTAX_KVM_UEXIT_SLOTS 48
#define FNTAX_KVM_PORT_BUCKETS 8
#define FNTAX_KVM_UEXIT_BASE 96
#define FNTAX_KVM_PORT_BASE 144
#define FNTAX_KVM_SLOTS 152
#define FNTAX_KVM_DIRTY_SLOTS 8
#define FNTAX_KVM_F_LOADED 1      /* cpu: the thread's state is in the slot */
#define FNTAX_KVM_F_ENTRY_SEEN 2  /* kvm_entry fires for this thread: it closes userspace exits */
#define FNTAX_KVM_F_IN_RUN 4      /* inside a KVM_RUN ioctl */
#define FNTAX_KVM_F_VCPU 8        /* the thread made KVM events: a vCPU thread */
/* FNTAX_KVM=1: the KVM family is in the module (the loader says so, with the
 * ioctl's syscall number): its KVM_RUN hook rides on the raw sys_enter /
 * sys_exit programs (syscalls.bpf.c's, which come first in the module). */
#ifndef FNTAX_KVM
#define FNTAX_KVM 0
#endif
#ifndef FNTAX_NR_IOCTL
#define FNTAX_NR_IOCTL 16         /* x86_64; profiler/bpf/arch.py passes the machine's */
#endif
/* sched_switch prev_state: any of these bits means the task chose to sleep
 * (voluntary); none means it was preempted while runnable (involuntary).
 * TASK_REPORT_MAX (0x100) marks preemption and is outside the mask. */
#define FNTAX_TASK_REPORT_MASK 0xff
/* sched_switch prev_state of a task's last switch-out: EXIT_DEAD | EXIT_ZOMBIE. */
#define FNTAX_EXIT_STATE_MASK 0x30

/* Indices of the map-update failure counters (errors map). User space reads
 * this enum from here (profiler/bpf/contracts.py): FNTAX_ERR_<MAP> is the
 * slot of map <map>; FNTAX_ERR_SLOTS is the array size. */
enum fntax_map_error {
    FNTAX_ERR_TASKS = 0,
    FNTAX_ERR_PROCS = 1,
    FNTAX_ERR_PROC_SYSCALLS = 2,
    FNTAX_ERR_DECOMP_ACTIVE = 3,
    FNTAX_ERR_DECOMP = 4,
    FNTAX_ERR_PROC_KVM = 5,  /* KVM: per-process reason / port-bucket map */
    FNTAX_ERR_SLOTS = 8,
};

/* Per-process (and per-CPU delta) counters. Every member is a u64 that only
 * grows; user space reads them by name and order (profiler/figures.py
 * declares what each becomes, and the loader checks the two agree). */
struct fntax_counters {
    u64 syscalls;
    u64 syscall_ns;          /* enter to exit, blocked time included */
    u64 syscall_offcpu_ns;   /* part of syscall_ns spent switched out */
    u64 voluntary_switches;
    u64 involuntary_switches;
    u64 oncpu_ns;
    u64 runqueue_ns;
    u64 runqueue_idle_ns;    /* part of runqueue_ns while the CPU it was queued on sat idle */
    u64 faults_user;
    u64 faults_kernel;
    u64 faults_minor;
    u64 faults_major;
    u64 faults_in_decoder;   /* user-mode faults taken inside a decoder call */
    u64 hardirq_ns;
    u64 softirq_ns;
    /* ---- KVM (kvm.bpf.c): VM-monitor processes only ---- */
    u64 kvm_exits;           /* kvm_exit, every reason (silent on PVM/nested hosts) */
    u64 kvm_exit_ns;         /* kvm_exit -> kvm_entry, HLT exits excluded (idle) */
    u64 kvm_userspace_exits; /* kvm_userspace_exit: exits that reach the VM monitor */
    u64 kvm_userspace_ns;    /* userspace exit -> the thread's re-entry, KVM_EXIT_HLT excluded */
    u64 kvm_reentries_by_entry; /* userspace exits closed by kvm_entry */
    u64 kvm_reentries_by_run;   /* userspace exits closed by the next KVM_RUN ioctl */
    u64 kvm_guest_ns;        /* on-CPU time inside KVM_RUN ioctls: the guest running (+ in-kernel exits) */
    u64 kvm_pio_in;
    u64 kvm_pio_out;
    u64 kvm_mmio_read;       /* kvm_mmio type 1 (a completed read) */
    u64 kvm_mmio_write;      /* kvm_mmio type 2 */
    u64 kvm_halts;           /* kvm_vcpu_wakeup: a guest halt ended */
    u64 kvm_halt_ns;         /* their time (slept or polled): idle guest, never tax */
    u64 vcpu_wait_ns;        /* run-queue wait of vCPU threads (steal time for the guest) */
};
#define FNTAX_COUNTER_WORDS (sizeof(struct fntax_counters) / sizeof(u64))

/* procs: per process, keyed by tgid. A pid can be reused while its last
 * owner's entries still wait for user space to read them (it deletes them
 * at its next fold): task_newtask then marks the old entry superseded, and
 * the new process counts under tgid | FNTAX_SUCCESSOR, in every per-process
 * map, until the old entry is gone (a pid reused twice within one fold
 * merges its second and third owners). Pids stay below 2^22. */
#define FNTAX_SUCCESSOR 0x80000000u
struct fntax_proc {
    struct fntax_counters c;
    u32 workload;
    u32 exited;              /* 0, FNTAX_EXITED or FNTAX_SUPERSEDED */
    char comm[16];
};
#define FNTAX_EXITED 1
#define FNTAX_SUPERSEDED 2

/* tasks: per thread (tid); its presence means "tracked". */
struct fntax_task {
    u32 workload;            /* 0 until armed (see arm_workload) */
    u32 sys_nr;              /* in-flight syscall while switched out */
    u64 sys_enter_ns;
    u64 offcpu_since_ns;     /* switched out inside a syscall since */
    u64 wait_since_ns;       /* runnable (woken or preempted) since; 0: running or asleep */
    u64 oncpu_ns;            /* the thread's on-CPU time up to its last switch-out */
    u32 arm_workload;        /* becomes workload at the task's next exec (fntax profile's start gate) */
    u32 wait_cpu;            /* the CPU it waits on while runnable */
    u64 wait_idle_mark_ns;   /* that CPU's idle clock when the wait (on it) began */
    u64 wait_idle_ns;        /* idle time of earlier CPUs of this wait (migrations) */
    u32 tl_state;            /* FNTAX_ASLEEP / FNTAX_RUNNABLE / FNTAX_ON_CPU */
    u32 in_decoder;          /* inside a decoder call when switched out */
    /* ---- KVM: a vCPU thread's in-flight state while switched out ---- */
    u64 kvm_exit_since_ns;   /* kvm_exit not yet re-entered (0: none) */
    u64 kvm_ue_since_ns;     /* userspace exit not yet re-entered (0: none) */
    u64 kvm_run_since_ns;    /* inside KVM_RUN since (on-CPU part counted up to here) */
    u32 kvm_exit_slot;
    u32 kvm_ue_slot;
    u32 kvm_flags;           /* FNTAX_KVM_F_* */
    u32 exiting;             /* a process leader past its exit (see fntax_fold) */
};

/* cpu_state: the task currently on this CPU and its unfolded counters. */
struct fntax_cpu {
    u32 tid;
    u32 workload;            /* 0: current task not tracked */
    u32 sys_nr;
    u32 ndirty;
    u64 sys_enter_ns;
    u64 oncpu_since_ns;
    u64 hardirq_enter_ns;
    u64 softirq_enter_ns;
    u32 dirty[FNTAX_DIRTY_SLOTS];
    u32 overflow;
    u32 track_gen;           /* tracking generation the workload was resolved at */
    u32 in_decoder;          /* the current task is inside a decoder call */
    u32 exiting;             /* the current task is a process leader past its exit */
    struct fntax_counters delta;
    /* ---- KVM: the vCPU thread whose state is loaded here (0: none) ---- */
    u32 kvm_tid;
    u32 kvm_flags;
    u32 kvm_exit_slot;
    u32 kvm_ue_slot;
    u64 kvm_exit_since_ns;
    u64 kvm_ue_since_ns;
    u64 kvm_run_since_ns;
    u32 kvm_events;          /* KVM events since the last fold */
    u32 kvm_ndirty;
    u32 kvm_overflow;
    u32 kvm_reserved;
    u32 kvm_dirty[FNTAX_KVM_DIRTY_SLOTS];
};

/* cpu_idle: each CPU's idle clock (indexed by CPU id, written by that CPU's
 * sched_switch only), so a waiting task can tell whether the CPU it waits on
 * was busy with another task (competition) or idle (it waited for something
 * else: its cgroup's CPU quota, or the CPU waking up); and the switches of
 * tracked tasks onto this CPU that sched_switch never showed. */
#ifndef FNTAX_MAX_CPUS
#define FNTAX_MAX_CPUS 1024
#endif
struct fntax_idle {
    u64 since_ns;            /* idle since, when idle */
    u64 total_ns;            /* idle time up to since_ns */
    u64 idle;
    u64 switches_unseen;     /* tracked tasks found leaving without a seen switch-in */
};

/* timelines: one per workload of `fntax profile` (the agent holds them only
 * for captures run through it, never for workload 1): how many of
 * its tasks are on a CPU, runnable or alive, and the wall time it spent with
 * at least one task on a CPU (busy), none on a CPU but some runnable
 * (waiting), or all alive tasks asleep (blocked on the world). Starts at the
 * workload's exec and ends when its last task has left the CPU for good.
 * Updates from several CPUs take a short compare-and-swap lock (tracing
 * programs may not use bpf_spin_lock); a lock never won in FNTAX_LOCK_TRIES
 * is counted in lock_misses. */
struct fntax_timeline {
    u64 lock;
    u64 since_ns;
    u64 start_ns;
    u64 end_ns;
    u32 running;
    u32 runnable;
    u32 live;
    u32 lock_misses;
    u64 busy_ns;
    u64 waiting_ns;
    u64 blocked_ns;
};

enum fntax_event_type {
    FNTAX_EV_FORK = 1,
    FNTAX_EV_EXEC = 2,
    FNTAX_EV_EXIT = 3,
};

/* events: fork (pid = the child thread, ppid = the forking process),
 * exec and exit of a process (pid = tgid). */
#define FNTAX_ENV_VALUE 64

struct fntax_event {
    u32 type;
    u32 pid;
    u32 ppid;
    u32 has_env;             /* exec: env_value holds FNTAX_ENV_NAME's value */
    u64 ts_ns;
    char env_value[FNTAX_ENV_VALUE];
};

struct fntax_sys_key {
    u32 tgid;
    u32 nr;
};

/* Decompressor library ids, read by user space from here: FNTAX_LIB_<NAME>
 * is library lib<name>; extra (--decompressor) libraries take ids from
 * FNTAX_LIB_EXTRA up to FNTAX_LIB_LAST. Each id has its own entry program. */
enum fntax_decomp_lib {
    FNTAX_LIB_Z = 0,
    FNTAX_LIB_ZSTD = 1,
    FNTAX_LIB_LZMA = 2,
    FNTAX_LIB_BZ2 = 3,
    FNTAX_LIB_LZ4 = 4,
    FNTAX_LIB_EXTRA = 5,
    FNTAX_LIB_LAST = 12,
};

struct fntax_decomp_key {
    u32 tgid;
    u32 lib;                 /* enum fntax_decomp_lib */
};

struct fntax_sys_val {
    u64 count;
    u64 ns;
};

/* proc_kvm: per process and KVM slot (see FNTAX_KVM_SLOTS). */
struct fntax_kvm_key {
    u32 tgid;
    u32 slot;
};

struct fntax_decomp_val {
    u64 count;
    u64 ns;                  /* entry to return */
    u64 cpu_ns;              /* of which on-CPU (not preempted, throttled or asleep) */
};

BPF_HASH(tasks, u32, struct fntax_task, FNTAX_MAX_TASKS);
BPF_HASH(procs, u32, struct fntax_proc, FNTAX_MAX_PROCS);
BPF_HASH(proc_syscalls, struct fntax_sys_key, struct fntax_sys_val, FNTAX_MAX_PROC_SYSCALLS);
BPF_PERCPU_ARRAY(cpu_state, struct fntax_cpu, 1);
BPF_PERCPU_ARRAY(cpu_syscalls, struct fntax_sys_val, FNTAX_SYSCALL_SLOTS);
BPF_ARRAY(errors, u64, FNTAX_ERR_SLOTS);
/* ---- KVM maps ---- */
#ifndef FNTAX_MAX_PROC_KVM
#define FNTAX_MAX_PROC_KVM 16384
#endif
BPF_HASH(proc_kvm, struct fntax_kvm_key, struct fntax_sys_val, FNTAX_MAX_PROC_KVM);
BPF_PERCPU_ARRAY(cpu_kvm, struct fntax_sys_val, FNTAX_KVM_SLOTS);
/* Bumped by user space whenever it adds tasks to track, so per-CPU slots that
 * cached "not tracked" for a task re-resolve it (array lookups are inlined by
 * the JIT: this costs a few instructions on the hot path). */
BPF_ARRAY(track_gen, u32, 1);
BPF_ARRAY(cpu_idle, struct fntax_idle, FNTAX_MAX_CPUS);
#ifndef FNTAX_TIMELINE
#define FNTAX_TIMELINE 0
#endif
#define FNTAX_LOCK_TRIES 256
#if FNTAX_TIMELINE
BPF_HASH(timelines, u32, struct fntax_timeline, 1024);
#endif
#if FNTAX_EVENTS
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void fntax_emit(void *ctx, u32 type, u32 pid, u32 ppid)
{
#if FNTAX_EVENTS
    struct fntax_event ev = {.type = type, .pid = pid, .ppid = ppid, .ts_ns = bpf_ktime_get_ns()};
    events.perf_submit(ctx, &ev, sizeof(ev));
#endif
}

static __always_inline void fntax_count_error(int which)
{
    u64 *v = errors.lookup(&which);
    if (v)
        __sync_fetch_and_add(v, 1);
}

/* The thread's own on-CPU clock: up to its last switch-out, plus the current
 * stint when it is the one on this CPU. */
static __always_inline u64 fntax_thread_oncpu(u32 tid, struct fntax_task *t, u64 now)
{
    int zero = 0;
    struct fntax_cpu *cpu = cpu_state.lookup(&zero);
    u64 clock = t ? t->oncpu_ns : 0;
    if (cpu && cpu->tid == tid && now > cpu->oncpu_since_ns)
        clock += now - cpu->oncpu_since_ns;
    return clock;
}

/* The idle clock of a CPU at `now`. */
static __always_inline u64 fntax_idle_clock(u32 cpu_id, u64 now)
{
    struct fntax_idle *idle = cpu_idle.lookup(&cpu_id);
    if (!idle)
        return 0;
    u64 clock = idle->total_ns;
    if (idle->idle && now > idle->since_ns)
        clock += now - idle->since_ns;
    return clock;
}

/* A tracked task starts to wait on `cpu_id`. */
static __always_inline void fntax_wait_begin(struct fntax_task *t, u32 cpu_id, u64 now)
{
    t->wait_since_ns = now;
    t->wait_cpu = cpu_id;
    t->wait_idle_mark_ns = fntax_idle_clock(cpu_id, now);
    t->wait_idle_ns = 0;
}

/* A task's place on its workload's timeline. Counts change only through
 * fntax_task_state, from one state to another, so a task is never counted
 * twice however its events interleave. */
#define FNTAX_ASLEEP 0
#define FNTAX_RUNNABLE 1
#define FNTAX_ON_CPU 2

/* Move the timeline of `workload` to `now` and apply count changes. */
static __always_inline void fntax_timeline(u32 workload, u64 now, int d_running, int d_runnable, int d_live)
{
#if FNTAX_TIMELINE
    /* System-wide, every task is workload 1 and has no timeline: only the
     * captures `fntax profile` runs through the agent (ids from 2) have one. */
    if (FNTAX_TRACE_ALL && workload <= 1)
        return;
    struct fntax_timeline *tl = timelines.lookup(&workload);
    if (!tl || !tl->start_ns || tl->end_ns)
        return;
    int won = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < FNTAX_LOCK_TRIES; i++) {
        if (__sync_val_compare_and_swap(&tl->lock, 0, 1) == 0) {
            won = 1;
            break;
        }
    }
    if (!won) {
        __sync_fetch_and_add(&tl->lock_misses, 1);
        return;
    }
    if (now > tl->since_ns) {
        u64 dt = now - tl->since_ns;
        if (tl->running)
            tl->busy_ns += dt;
        else if (tl->runnable)
            tl->waiting_ns += dt;
        else
            tl->blocked_ns += dt;
        tl->since_ns = now;
    }
    if (d_running > 0 || tl->running > 0)
        tl->running += d_running;
    if (d_runnable > 0 || tl->runnable > 0)
        tl->runnable += d_runnable;
    if (d_live > 0 || tl->live > 0)
        tl->live += d_live;
    /* A task preempted on its way out (sched_process_exit comes before the
     * address space is torn down: milliseconds of CPU for a big heap) is
     * no longer live but still runnable: the timeline ends only once it
     * has left the CPU for good. */
    if (tl->live == 0 && tl->running == 0 && tl->runnable == 0)
        tl->end_ns = now;
    __sync_lock_test_and_set(&tl->lock, 0);
#endif
}

static __always_inline void fntax_task_state(struct fntax_task *t, u32 state, u64 now)
{
    u32 old = t->tl_state;
    if (old == state)
        return;
    t->tl_state = state;
    if (t->workload)
        fntax_timeline(t->workload, now, (state == FNTAX_ON_CPU) - (old == FNTAX_ON_CPU),
                       (state == FNTAX_RUNNABLE) - (old == FNTAX_RUNNABLE), 0);
}

/* A switch of a tracked task onto this CPU that sched_switch never showed
 * (on some hosts the hypervisor's own tasks fire no tracepoints, so a switch
 * away from them goes unseen): user space reports these as skipped runs of
 * sched_switch, since waits around them are not exact. */
static __always_inline void fntax_count_unseen_switch(void)
{
    u32 cpu_id = bpf_get_smp_processor_id();
    struct fntax_idle *idle = cpu_idle.lookup(&cpu_id);
    if (idle)
        __sync_fetch_and_add(&idle->switches_unseen, 1);
}

/* A task's wait ends at `end`: it runs on this CPU from then (its place on
 * the timeline moves at `now`). Its wait (and the part of it its CPU sat
 * idle) goes into the slot's pending delta. */
static __always_inline void fntax_wait_end(struct fntax_cpu *cpu, struct fntax_task *t, u64 end, u64 now)
{
    if (t->wait_since_ns && t->workload && end > t->wait_since_ns) {
        u64 waited = end - t->wait_since_ns;
        u64 clock = fntax_idle_clock(t->wait_cpu, end);
        u64 idle = t->wait_idle_ns + (clock > t->wait_idle_mark_ns ? clock - t->wait_idle_mark_ns : 0);
        cpu->delta.runqueue_ns += waited;
        cpu->delta.runqueue_idle_ns += idle < waited ? idle : waited;
    }
    t->wait_since_ns = 0;
    fntax_task_state(t, FNTAX_ON_CPU, now);
}

/* The calling task's slot, made current if another task left it. Returns the
 * slot (tracked or not) or NULL only if the per-CPU array is unreadable. */
static __always_inline struct fntax_cpu *fntax_cpu_current(u32 tid)
{
    int zero = 0;
    struct fntax_cpu *cpu = cpu_state.lookup(&zero);
    if (!cpu)
        return 0;
    u32 *gen = track_gen.lookup(&zero);
    u32 now_gen = gen ? *gen : 0;
    if (cpu->tid != tid || cpu->track_gen != now_gen) {
        /* First event of this task on this CPU since we attached (or a missed
         * switch): adopt the slot. Any unfolded delta of the previous owner
         * was folded at its switch-out. */
        struct fntax_task *t = tasks.lookup(&tid);
        cpu->workload = t ? t->workload : (FNTAX_TRACE_ALL ? 1 : 0);
        cpu->track_gen = now_gen;
        if (cpu->tid != tid) {
            u64 now = bpf_ktime_get_ns();
            cpu->tid = tid;
            cpu->sys_nr = FNTAX_NO_SYSCALL;
            cpu->oncpu_since_ns = now;
            /* Seen waiting, now running: its switch-in went unseen. Its wait
             * ends here, not at its next switch-out (which would start a new
             * wait over it and lose this one); a task that makes events runs
             * at most a moment before its first. */
            if (t && t->wait_since_ns) {
                fntax_count_unseen_switch();
                fntax_wait_end(cpu, t, now, now);
            }
        }
    }
    return cpu;
}

/* Counter by counter: fntax_counters is an array of u64 in all but name, so
 * adding one to another never needs to spell a member. */
static __always_inline void fntax_add_counters(struct fntax_counters *dst,
                                               const struct fntax_counters *src)
{
    u64 *d = (u64 *)dst;
    const u64 *s = (const u64 *)src;
#pragma unroll
    for (int i = 0; i < FNTAX_COUNTER_WORDS; i++)
        __sync_fetch_and_add(&d[i], s[i]);
}

/* Take the slot's count of syscall nr: into proc_syscalls[tgid, nr] when
 * `keep`, else dropped. Either way the per-CPU entry is left at zero. */
static __always_inline void fntax_fold_syscall_nr(u32 tgid, u32 nr, int keep)
{
    struct fntax_sys_val *src = cpu_syscalls.lookup(&nr);
    if (!src || src->count == 0)
        return;
    if (keep) {
        struct fntax_sys_key key = {.tgid = tgid, .nr = nr};
        struct fntax_sys_val *dst = proc_syscalls.lookup(&key);
        if (dst) {
            __sync_fetch_and_add(&dst->count, src->count);
            __sync_fetch_and_add(&dst->ns, src->ns);
        } else {
            struct fntax_sys_val fresh = *src;
            if (proc_syscalls.update(&key, &fresh) != 0)
                fntax_count_error(FNTAX_ERR_PROC_SYSCALLS);
        }
    }
    src->count = 0;
    src->ns = 0;
}

/* Every syscall number the slot counted (the dirty list, or all of them past
 * its end), taken as fntax_fold_syscall_nr says; the slot is then clean. */
static __always_inline void fntax_fold_syscalls(struct fntax_cpu *cpu, u32 tgid, int keep)
{
    if (cpu->overflow) {
#pragma clang loop unroll(disable)
        for (u32 nr = 0; nr < FNTAX_SYSCALL_SLOTS; nr++)
            fntax_fold_syscall_nr(tgid, nr, keep);
    } else {
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < FNTAX_DIRTY_SLOTS; i++) {
            if (i >= cpu->ndirty)
                break;
            fntax_fold_syscall_nr(tgid, cpu->dirty[i], keep);
        }
    }
    cpu->ndirty = 0;
    cpu->overflow = 0;
}

/* ---- KVM fold helpers ---- */
static __always_inline void fntax_kvm_fold_slot(u32 tgid, u32 slot)
{
    struct fntax_sys_val *src = cpu_kvm.lookup(&slot);
    if (!src || (src->count == 0 && src->ns == 0))
        return;
    struct fntax_kvm_key key = {.tgid = tgid, .slot = slot};
    struct fntax_sys_val *dst = proc_kvm.lookup(&key);
    if (dst) {
        __sync_fetch_and_add(&dst->count, src->count);
        __sync_fetch_and_add(&dst->ns, src->ns);
    } else {
        struct fntax_sys_val fresh = *src;
        if (proc_kvm.update(&key, &fresh) != 0)
            fntax_count_error(FNTAX_ERR_PROC_KVM);
    }
    src->count = 0;
    src->ns = 0;
}

/* Before a fold, in the owner's context: a vCPU thread's run-queue wait is
 * also vCPU wait; its in-flight state (an exit or userspace exit not yet
 * re-entered, a KVM_RUN in progress) is parked in its tasks entry, reloaded
 * by its next KVM event; the reason slots touched go to proc_kvm. Costs
 * nothing for threads that did no KVM event since their switch-in. */
static __always_inline void fntax_kvm_park(struct fntax_cpu *cpu, u32 tgid, u64 now)
{
    u32 tid = cpu->tid;
    if (cpu->kvm_tid != tid || !(cpu->kvm_flags & FNTAX_KVM_F_LOADED))
        return;
    if (cpu->kvm_flags & FNTAX_KVM_F_VCPU)
        cpu->delta.vcpu_wait_ns += cpu->delta.runqueue_ns;
    if (cpu->kvm_flags & FNTAX_KVM_F_IN_RUN) {
        u64 from = cpu->kvm_run_since_ns > cpu->oncpu_since_ns ? cpu->kvm_run_since_ns : cpu->oncpu_since_ns;
        if (now > from)
            cpu->delta.kvm_guest_ns += now - from;
        cpu->kvm_run_since_ns = now;
    }
    struct fntax_task *t = tasks.lookup(&tid);
    if (t) {
        t->kvm_exit_since_ns = cpu->kvm_exit_since_ns;
        t->kvm_ue_since_ns = cpu->kvm_ue_since_ns;
        t->kvm_run_since_ns = cpu->kvm_run_since_ns;
        t->kvm_exit_slot = cpu->kvm_exit_slot;
        t->kvm_ue_slot = cpu->kvm_ue_slot;
        t->kvm_flags = cpu->kvm_flags & ~FNTAX_KVM_F_LOADED;
    }
    cpu->kvm_tid = 0;
    cpu->kvm_flags = 0;
    cpu->kvm_events = 0;
    if (cpu->kvm_overflow) {
#pragma clang loop unroll(disable)
        for (u32 slot = 0; slot < FNTAX_KVM_SLOTS; slot++)
            fntax_kvm_fold_slot(tgid, slot);
    } else {
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < FNTAX_KVM_DIRTY_SLOTS; i++) {
            if (i >= cpu->kvm_ndirty)
                break;
            fntax_kvm_fold_slot(tgid, cpu->kvm_dirty[i]);
        }
    }
    cpu->kvm_ndirty = 0;
    cpu->kvm_overflow = 0;
}

/* Drop what a slot's previous owner left unfolded. Counts are taken only
 * while a tracked task owns the slot and are folded at its switch-out, so
 * some are left over only when that switch-out did not run through
 * sched_switch: the probes attached while the task ran (system-wide, every
 * syscall between the syscall programs' attach and sched_switch's was
 * counted), or a run the kernel skipped. They cannot be told from the next
 * owner's; worse, a per-CPU syscall slot left non-zero is never listed as
 * dirty again, so its number's calls were lost for every later task on that
 * CPU (a capture through the agent lost its loader's calls by name). */
static __always_inline void fntax_drop_pending(struct fntax_cpu *cpu)
{
    fntax_fold_syscalls(cpu, 0, 0);
    __builtin_memset(&cpu->delta, 0, sizeof(cpu->delta));
}

/* The current process's procs entry; *key becomes the key its per-process
 * entries go under (tgid, or tgid | FNTAX_SUCCESSOR: see struct fntax_proc). */
static __always_inline struct fntax_proc *fntax_proc_lookup(u32 *key)
{
    struct fntax_proc *p = procs.lookup(key);
    if (p && p->exited == FNTAX_SUPERSEDED) {
        *key |= FNTAX_SUCCESSOR;
        p = procs.lookup(key);
    }
    return p;
}

/* Fold the slot's delta into the process's entries; must run in the owner's
 * context (tgid comes from the current task). */
static __always_inline void fntax_fold(struct fntax_cpu *cpu, u32 tgid)
{
    if (!cpu->workload)
        return;
    u32 key = tgid;
    struct fntax_proc *p = fntax_proc_lookup(&key);
    fntax_kvm_park(cpu, key, bpf_ktime_get_ns());
    if (p) {
        fntax_add_counters(&p->c, &cpu->delta);
    } else {
        struct fntax_proc fresh = {};
        fresh.c = cpu->delta;
        fresh.workload = cpu->workload;
        /* A leader's switch-out after its exit, once user space has read
         * and deleted the entry: born exited, never a process that lives on. */
        fresh.exited = cpu->exiting ? FNTAX_EXITED : 0;
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        if (procs.update(&key, &fresh) != 0)
            fntax_count_error(FNTAX_ERR_PROCS);
    }
    __builtin_memset(&cpu->delta, 0, sizeof(cpu->delta));
    fntax_fold_syscalls(cpu, key, 1);
}

#endif /* FNTAX_H */
