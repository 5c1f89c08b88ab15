/* Workloads that report the kernel's own accounting of themselves.
 *
 *   accounting OUT syscalls N      N x syscall(SYS_getppid)
 *   accounting OUT faults PAGES    touch PAGES fresh anonymous pages
 *   accounting OUT sleeps N        N x nanosleep(50 us): voluntary switches
 *   accounting OUT spin MS         spin MS of own CPU time pinned to CPU 0
 *   accounting OUT fork N          a child and a thread each make N getppid
 *   accounting OUT spinfree MS     spin MS of own CPU time, on any CPU
 *   accounting OUT spinwall MS     spin MS of wall time making no syscall (the clock is the vDSO's)
 *   accounting OUT sleepfor MS     one nanosleep of MS; reports how long it slept
 *   accounting OUT clock MS        spin MS; appends its own main-to-exit span to OUT
 *
 * At the very end each writes JSON to OUT: getrusage(RUSAGE_SELF) counters
 * and /proc/self/schedstat (on-CPU ns, run-queue wait ns), the kernel's own
 * figures, independent of fntax, counted from the start of main; and the
 * schedstat figures since the process was forked (its thread's whole life,
 * exec and start-up included: what fntax counts for a process forked by a
 * tracked one).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long n_arg;

static void getppids(long n)
{
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
}

static void *thread_main(void *arg)
{
    (void)arg;
    getppids(n_arg);
    return NULL;
}

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void spin_ms(long ms)
{
    double until = thread_cpu_seconds() + ms / 1000.0;
    while (thread_cpu_seconds() < until)
        ;
}

/* The kernel's own counters of this process: getrusage and schedstat. */
struct own {
    struct rusage ru;
    unsigned long long exec_ns, wait_ns;
};

static void own_now(struct own *o)
{
    unsigned long long slices = 0;
    getrusage(RUSAGE_SELF, &o->ru);
    o->exec_ns = o->wait_ns = 0;
    FILE *st = fopen("/proc/self/schedstat", "r");
    if (st) {
        if (fscanf(st, "%llu %llu %llu", &o->exec_ns, &o->wait_ns, &slices) != 3)
            o->exec_ns = o->wait_ns = 0;
        fclose(st);
    }
}

/* Taken first thing in main: what this process did before it (the forking
 * parent's code before exec, e.g. fntax's start gate) is not the workload's. */
static struct own at_start;

static void report(const char *path, const char *extra)
{
    struct own o;
    own_now(&o);
    FILE *out = fopen(path, "w");
    if (!out)
        exit(3);
    fprintf(out, "{\"pid\": %d, \"minflt\": %ld, \"majflt\": %ld, \"nvcsw\": %ld, \"nivcsw\": %ld, "
                 "\"oncpu_ns\": %llu, \"runqueue_ns\": %llu, "
                 "\"oncpu_since_fork_ns\": %llu, \"runqueue_since_fork_ns\": %llu%s}\n",
            getpid(), o.ru.ru_minflt - at_start.ru.ru_minflt, o.ru.ru_majflt - at_start.ru.ru_majflt,
            o.ru.ru_nvcsw - at_start.ru.ru_nvcsw, o.ru.ru_nivcsw - at_start.ru.ru_nivcsw,
            o.exec_ns - at_start.exec_ns, o.wait_ns - at_start.wait_ns, o.exec_ns, o.wait_ns, extra);
    fclose(out);
}

int main(int argc, char **argv)
{
    own_now(&at_start);
    if (argc != 4)
        return 2;
    const char *out = argv[1], *mode = argv[2];
    n_arg = atol(argv[3]);
    if (!strcmp(mode, "syscalls")) {
        getppids(n_arg);
    } else if (!strcmp(mode, "faults")) {
        long page = sysconf(_SC_PAGESIZE);
        volatile char *mem = mmap(NULL, (size_t)n_arg * page, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (long i = 0; i < n_arg; i++)
            mem[i * page] = 1;
    } else if (!strcmp(mode, "sleeps")) {
        struct timespec ts = {0, 50000};
        for (long i = 0; i < n_arg; i++)
            nanosleep(&ts, NULL);
    } else if (!strcmp(mode, "spin")) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        sched_setaffinity(0, sizeof(set), &set);
        double until = thread_cpu_seconds() + n_arg / 1000.0;
        while (thread_cpu_seconds() < until)
            ;
    } else if (!strcmp(mode, "spinwall")) {
        unsigned long long until = mono_ns() + n_arg * 1000000ULL;
        while (mono_ns() < until)
            ;
    } else if (!strcmp(mode, "spinfree")) {
        spin_ms(n_arg);
    } else if (!strcmp(mode, "sleepfor")) {
        struct timespec ts = {n_arg / 1000, (n_arg % 1000) * 1000000L};
        unsigned long long t0 = mono_ns();
        nanosleep(&ts, NULL);
        char extra[64];
        snprintf(extra, sizeof(extra), ", \"slept_ns\": %llu", mono_ns() - t0);
        report(out, extra);
        return 0;
    } else if (!strcmp(mode, "clock")) {
        /* Its own clock, from main to just before exit, one line per run. */
        unsigned long long t0 = mono_ns();
        spin_ms(n_arg);
        FILE *f = fopen(out, "a");
        if (!f)
            return 3;
        fprintf(f, "%llu\n", mono_ns() - t0);
        fclose(f);
        return 0;
    } else if (!strcmp(mode, "fork")) {
        pid_t child = fork();
        if (child == 0) {
            getppids(n_arg);
            _exit(0);
        }
        pthread_t thread;
        pthread_create(&thread, NULL, thread_main, NULL);
        pthread_join(thread, NULL);
        waitpid(child, NULL, 0);
        char extra[64];
        snprintf(extra, sizeof(extra), ", \"child\": %d", child);
        report(out, extra);
        return 0;
    } else {
        return 2;
    }
    report(out, "");
    return 0;
}
