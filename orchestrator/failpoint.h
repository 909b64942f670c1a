/*
 * Fail points for fault-injection tests: off by default; when the setting
 * fail_point names one, sagad kills itself with SIGKILL (as kill -9 would)
 * the fail_point_after-th time it passes that point.
 */
#ifndef SAGAD_FAILPOINT_H
#define SAGAD_FAILPOINT_H

/* The crash points of RELIABILITY.md's fault matrix. */
enum failpoint {
	FP_NONE = 0,                    /* off */
	FP_AFTER_COMMIT_BEFORE_PUBLISH, /* a transaction wrote outbox rows; the relay has not run */
	FP_AFTER_PUBLISH_BEFORE_DELETE, /* the relay got JetStream's acks; rows not deleted yet */
	FP_AFTER_FETCH_BEFORE_COMMIT,   /* replies fetched; their transaction not committed */
	FP_AFTER_COMMIT_BEFORE_ACK,     /* replies committed; not acked to JetStream yet */
	FP_COUNT,                       /* number of points */
};

/* Arm one point (by name, as in the setting) to fire on its n-th pass; "" or "off" disarms. */
int failpoint_arm(const char *name, long n);

/* Pass point p: dies here when it is armed and its count is reached. */
void failpoint_pass(enum failpoint p);

/* Name of a point ("after_commit_before_publish"). */
const char *failpoint_name(enum failpoint p);

#endif /* SAGAD_FAILPOINT_H */
