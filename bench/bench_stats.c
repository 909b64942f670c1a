/* Figures for saga-bench: log-linear histograms, percentiles, /proc readings. */
#include "bench_stats.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HIST_EXACT   64 /* values below this have a bucket each */
#define HIST_PER_EXP 32 /* buckets per power of two above */
#define HIST_MAX     ((INT64_C(1) << 40) - 1)
#define MAX_TREE     4096 /* processes looked at for a tree */

static int
bucket_of(int64_t v)
{
	int msb, shift;

	if (v < 0)
		v = 0;
	if (v > HIST_MAX)
		v = HIST_MAX;
	if (v < HIST_EXACT)
		return (int)v;
	msb = 63 - __builtin_clzll((unsigned long long)v);
	shift = msb - 5; /* v >> shift is in [32, 63] */
	return HIST_EXACT + (shift - 1) * HIST_PER_EXP + (int)((v >> shift) - HIST_PER_EXP);
}

static double
bucket_middle(int b)
{
	int shift;
	int64_t top, low, high;

	if (b < HIST_EXACT)
		return b;
	shift = (b - HIST_EXACT) / HIST_PER_EXP + 1;
	top = (b - HIST_EXACT) % HIST_PER_EXP + HIST_PER_EXP;
	low = top << shift;
	high = ((top + 1) << shift) - 1;
	return (double)(low + high) / 2.0;
}

void
bench_hist_add(struct bench_hist *h, int64_t v)
{
	atomic_fetch_add_explicit(&h->counts[bucket_of(v)], 1, memory_order_relaxed);
}

void
bench_hist_take(struct bench_hist *h, struct bench_hist_snap *snap)
{
	snap->n = 0;
	for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
		snap->counts[i] = atomic_exchange_explicit(&h->counts[i], 0, memory_order_relaxed);
		snap->n += snap->counts[i];
	}
}

double
bench_hist_pct(const struct bench_hist_snap *snap, double p)
{
	uint64_t rank, seen = 0;

	if (snap->n == 0)
		return NAN;
	rank = (uint64_t)ceil(p * (double)snap->n);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += snap->counts[i];
		if (seen >= rank)
			return bucket_middle(i);
	}
	return bucket_middle(BENCH_HIST_BUCKETS - 1);
}

double
bench_pct_sorted(const int64_t *sorted, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return NAN;
	rank = (size_t)ceil(p * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1];
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

void
bench_sort(int64_t *v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_i64);
}

/* ppid and user+system ticks of pid from /proc/<pid>/stat; false when gone. */
static bool
read_stat(int pid, int *ppid, unsigned long long *ticks)
{
	char path[64], buf[1024];
	char *p;
	FILE *f;
	size_t n;
	unsigned long long utime = 0, stime = 0;
	int parent = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields follow the last ')'. */
	p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	                        &parent, &utime, &stime) != 3)
		return false;
	*ppid = parent;
	*ticks = utime + stime;
	return true;
}

/* pid and its living descendants into out (at most max); returns how many. */
static int
tree_of(int pid, int *out, int max)
{
	static int pids[MAX_TREE], ppids[MAX_TREE];
	int n_all = 0, n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (max < 1)
		return 0;
	out[n++] = pid;
	if (d == NULL)
		return n;
	while ((e = readdir(d)) != NULL && n_all < MAX_TREE) {
		unsigned long long ticks;
		int p = atoi(e->d_name);

		if (p > 0 && read_stat(p, &ppids[n_all], &ticks))
			pids[n_all++] = p;
	}
	closedir(d);
	/* Breadth first: out[i]'s children are appended after it. */
	for (int i = 0; i < n && n < max; i++) {
		for (int k = 0; k < n_all && n < max; k++) {
			if (ppids[k] == out[i])
				out[n++] = pids[k];
		}
	}
	return n;
}

double
bench_proc_cpu_seconds(int pid, bool tree)
{
	int pids[MAX_TREE];
	int n = tree ? tree_of(pid, pids, MAX_TREE) : 1;
	unsigned long long total = 0;
	long hz = sysconf(_SC_CLK_TCK);

	if (!tree)
		pids[0] = pid;
	for (int i = 0; i < n; i++) {
		unsigned long long ticks;
		int ppid;

		if (read_stat(pids[i], &ppid, &ticks))
			total += ticks;
		else if (i == 0)
			return NAN;
	}
	return (double)total / (double)(hz > 0 ? hz : 100);
}

/* One kB field of /proc/<pid>/status, or -1. */
static long
status_kb(int pid, const char *field)
{
	char path[64], line[256];
	size_t flen = strlen(field);
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
			kb = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

long
bench_proc_status_kb(int pid, const char *field, bool tree)
{
	int pids[MAX_TREE];
	int n = tree ? tree_of(pid, pids, MAX_TREE) : 1;
	long total = 0;

	if (!tree)
		pids[0] = pid;
	for (int i = 0; i < n; i++) {
		long kb = status_kb(pids[i], field);

		if (kb < 0 && i == 0)
			return -1;
		if (kb > 0)
			total += kb;
	}
	return total;
}
