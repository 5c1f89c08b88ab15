/* Workloads that report the kernel's own accounting of themselves.
 *
 *   accounting OUT syscalls N      N x syscall(SYS_getppid)
 *   accounting OUT faults PAGES    touch PAGES fresh anonymous pages
 *   accounting OUT sleeps N        N x nanosleep(50 us): voluntary switches
 *   accounting OUT spin MS         spin MS of own CPU time pinned to CPU 0
 *   accounting OUT fork N          a child and a thread each make N getppid
 *
 * At the very end each writes JSON to OUT: getrusage(RUSAGE_SELF) counters
 * and /proc/self/schedstat (on-CPU ns, run-queue wait ns), the kernel's own
 * figures, independent of fntax.
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

static void report(const char *path, const char *extra)
{
    struct rusage ru;
    unsigned long long exec_ns = 0, wait_ns = 0, slices = 0;
    getrusage(RUSAGE_SELF, &ru);
    FILE *st = fopen("/proc/self/schedstat", "r");
    if (st) {
        if (fscanf(st, "%llu %llu %llu", &exec_ns, &wait_ns, &slices) != 3)
            exec_ns = wait_ns = 0;
        fclose(st);
    }
    FILE *out = fopen(path, "w");
    if (!out)
        exit(3);
    fprintf(out, "{\"pid\": %d, \"minflt\": %ld, \"majflt\": %ld, \"nvcsw\": %ld, \"nivcsw\": %ld, "
                 "\"oncpu_ns\": %llu, \"runqueue_ns\": %llu%s}\n",
            getpid(), ru.ru_minflt, ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw, exec_ns, wait_ns, extra);
    fclose(out);
}

int main(int argc, char **argv)
{
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
