/*
 * Fail points for fault-injection tests: off by default; when the setting
 * fail_point names one, sagad kills itself with SIGKILL (as kill -9 would)
 * the fail_point_after-th time it passes that point.
 */
#include "failpoint.h"

#include <signal.h>
#include <string.h>

#include "log.h"

static const char *const names[FP_COUNT] = {
        [FP_NONE] = "off",
        [FP_AFTER_COMMIT_BEFORE_PUBLISH] = "after_commit_before_publish",
        [FP_AFTER_PUBLISH_BEFORE_DELETE] = "after_publish_before_delete",
        [FP_AFTER_FETCH_BEFORE_COMMIT] = "after_fetch_before_commit",
        [FP_AFTER_COMMIT_BEFORE_ACK] = "after_commit_before_ack",
};

static enum failpoint armed = FP_NONE;
static long remaining;

const char *
failpoint_name(enum failpoint p)
{
	return p >= 0 && p < FP_COUNT ? names[p] : "unknown";
}

int
failpoint_arm(const char *name, long n)
{
	if (name[0] == '\0') {
		armed = FP_NONE;
		return 0;
	}
	for (int i = 0; i < FP_COUNT; i++) {
		if (strcmp(name, names[i]) == 0) {
			armed = (enum failpoint)i;
			remaining = n > 0 ? n : 1;
			if (armed != FP_NONE)
				log_warn("fail point %s armed: sagad will kill itself on pass %ld",
				         name, remaining);
			return 0;
		}
	}
	return -1;
}

void
failpoint_pass(enum failpoint p)
{
	if (p != armed || armed == FP_NONE || --remaining > 0)
		return;
	log_warn("fail point %s reached: SIGKILL", names[p]);
	raise(SIGKILL);
}
