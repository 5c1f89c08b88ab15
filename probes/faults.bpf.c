/* Page faults: user-mode and kernel-mode fault exceptions (exceptions
 * tracepoints), and minor / major faults as the memory manager accounts them
 * (perf software events PAGE_FAULTS_MIN / PAGE_FAULTS_MAJ, one sample per
 * fault: the same points where the kernel counts rusage's minflt/majflt).
 *
 * fntax:map cpu_state  percpu_array u32 fntax_cpu
 */
#include "fntax.h"

static __always_inline struct fntax_cpu *fntax_fault_slot(void)
{
    struct fntax_cpu *cpu = fntax_cpu_current((u32)bpf_get_current_pid_tgid());
    return (cpu && cpu->workload) ? cpu : 0;
}

/* Raw tracepoints, for the reason given at sched_process_exec (sched.bpf.c);
 * no argument is read. */
RAW_TRACEPOINT_PROBE(page_fault_user)
{
    struct fntax_cpu *cpu = fntax_fault_slot();
    if (cpu) {
        cpu->delta.faults_user += 1;
        /* Inside a decoder the fault's time is already decompression time. */
        if (cpu->in_decoder)
            cpu->delta.faults_in_decoder += 1;
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(page_fault_kernel)
{
    struct fntax_cpu *cpu = fntax_fault_slot();
    if (cpu)
        cpu->delta.faults_kernel += 1;
    return 0;
}

int fntax_fault_minor(void *ctx)
{
    struct fntax_cpu *cpu = fntax_fault_slot();
    if (cpu)
        cpu->delta.faults_minor += 1;
    return 0;
}

int fntax_fault_major(void *ctx)
{
    struct fntax_cpu *cpu = fntax_fault_slot();
    if (cpu)
        cpu->delta.faults_major += 1;
    return 0;
}
