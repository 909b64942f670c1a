/* sagactl command options: one table of every option, each command naming those it takes. */
#ifndef SAGAD_CTL_ARGS_H
#define SAGAD_CTL_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Every option a sagactl command can take (after the command word). */
enum ctl_opt {
	OPT_JSON = 0,        /* --json: machine-readable output */
	OPT_STATE,           /* --state S */
	OPT_DEFINITION,      /* --definition NAME */
	OPT_OLDER_THAN,      /* --older-than DURATION */
	OPT_STUCK,           /* --stuck */
	OPT_LIMIT,           /* --limit N */
	OPT_NOTE,            /* --note TEXT */
	OPT_ALL,             /* --all */
	OPT_DRY_RUN,         /* --dry-run */
	OPT_YES,             /* --yes */
	OPT_CONFIRM,         /* --confirm N */
	OPT_RATE,            /* --rate N (messages per second) */
	OPT_CANARY,          /* --canary K */
	OPT_CANARY_WAIT,     /* --canary-wait DURATION */
	OPT_GROUP,           /* --group FINGERPRINT */
	OPT_ACTOR,           /* --actor NAME */
	OPT_STATUS,          /* --status S[,S] (dead letters) */
	OPT_CLASS,           /* --class ERROR_CLASS (dead letters) */
	OPT_INPUT,           /* --input JSON */
	OPT_VERSION,         /* --version N */
	OPT_IDEMPOTENCY_KEY, /* --idempotency-key K */
	OPT_CORRELATION_ID,  /* --correlation-id C */
	OPT_COUNT,           /* number of options */
};

#define CTL_OPT(o)        (UINT32_C(1) << (o))
#define CTL_MAX_POSITIONS 8

/* A parsed command line. */
struct ctl_args {
	const char *opt[OPT_COUNT];         /* value; "" for a flag that is set; NULL = absent */
	const char *pos[CTL_MAX_POSITIONS]; /* positional arguments in order */
	int n_pos;                          /* how many */
};

/*
 * Parse argv[0..argc) of one command: "--name value", "--name=value" and
 * flags among those allowed (a CTL_OPT mask), positional arguments, and "--"
 * (everything after it is positional). On a bad line returns STATUS_INVALID
 * with err saying what is wrong; *out is written only on success.
 */
enum status ctl_args_parse(struct ctl_args *out, uint32_t allowed, int argc, char **argv, char *err,
                           size_t errlen) MUSTCHECK;

/* True when option o was given. */
int ctl_args_has(const struct ctl_args *a, enum ctl_opt o);

/* "--name" of an option. */
const char *ctl_args_name(enum ctl_opt o);

/* Parse a non-negative integer option in [min, max]; STATUS_INVALID with err otherwise. */
enum status ctl_args_int(const struct ctl_args *a, enum ctl_opt o, int64_t min, int64_t max,
                         int64_t *out, char *err, size_t errlen) MUSTCHECK;

#endif /* SAGAD_CTL_ARGS_H */
