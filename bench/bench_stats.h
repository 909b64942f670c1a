/* Figures for saga-bench: latency histograms, percentiles, and CPU / memory of processes. */
#ifndef SAGAD_BENCH_STATS_H
#define SAGAD_BENCH_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Log-linear histogram of non-negative values (microseconds): exact below
 * 64, then 32 buckets per power of two (about 3% resolution), up to 2^40.
 * Adding is lock-free, from any thread.
 */
#define BENCH_HIST_BUCKETS (64 + 35 * 32)

struct bench_hist {
	_Atomic uint32_t counts[BENCH_HIST_BUCKETS]; /* values per bucket */
};

/* A histogram taken out of a live one, for percentiles. */
struct bench_hist_snap {
	uint64_t counts[BENCH_HIST_BUCKETS]; /* values per bucket */
	uint64_t n;                          /* values in all */
};

/* Count value v (clamped to [0, 2^40)). */
void bench_hist_add(struct bench_hist *h, int64_t v);

/* Move h's counts into *snap (replacing it) and zero h. */
void bench_hist_take(struct bench_hist *h, struct bench_hist_snap *snap);

/* Value at fraction p (0..1) of snap (bucket middle), or NaN when empty. */
double bench_hist_pct(const struct bench_hist_snap *snap, double p);

/* Value at fraction p of n sorted values (nearest rank), or NaN when n is 0. */
double bench_pct_sorted(const int64_t *sorted, size_t n, double p);

/* Sort n values in place, ascending. */
void bench_sort(int64_t *v, size_t n);

/*
 * CPU seconds (user + system) used so far by pid, and with tree also by all
 * its living descendants. NaN when pid is gone.
 */
double bench_proc_cpu_seconds(int pid, bool tree);

/*
 * A kB field of /proc/<pid>/status ("VmHWM" peak RSS, "VmRSS" current RSS),
 * summed over the descendants with tree. -1 when pid is gone.
 */
long bench_proc_status_kb(int pid, const char *field, bool tree);

#endif /* SAGAD_BENCH_STATS_H */
