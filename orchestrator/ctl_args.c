/* sagactl command options: one table of every option, each command naming those it takes. */
#include "ctl_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The options: name and whether a value follows. */
static const struct {
	const char *name; /* without the leading dashes */
	int has_value;    /* takes a value */
} options[OPT_COUNT] = {
        [OPT_JSON] = {"json", 0},
        [OPT_STATE] = {"state", 1},
        [OPT_DEFINITION] = {"definition", 1},
        [OPT_OLDER_THAN] = {"older-than", 1},
        [OPT_STUCK] = {"stuck", 0},
        [OPT_LIMIT] = {"limit", 1},
        [OPT_NOTE] = {"note", 1},
        [OPT_ALL] = {"all", 0},
        [OPT_DRY_RUN] = {"dry-run", 0},
        [OPT_YES] = {"yes", 0},
        [OPT_CONFIRM] = {"confirm", 1},
        [OPT_RATE] = {"rate", 1},
        [OPT_CANARY] = {"canary", 1},
        [OPT_CANARY_WAIT] = {"canary-wait", 1},
        [OPT_GROUP] = {"group", 1},
        [OPT_ACTOR] = {"actor", 1},
        [OPT_STATUS] = {"status", 1},
        [OPT_CLASS] = {"class", 1},
        [OPT_INPUT] = {"input", 1},
        [OPT_VERSION] = {"version", 1},
        [OPT_IDEMPOTENCY_KEY] = {"idempotency-key", 1},
        [OPT_CORRELATION_ID] = {"correlation-id", 1},
};

const char *
ctl_args_name(enum ctl_opt o)
{
	static char names[OPT_COUNT][32];

	if ((int)o < 0 || o >= OPT_COUNT)
		return "--?";
	if (names[o][0] == '\0')
		snprintf(names[o], sizeof(names[o]), "--%s", options[o].name);
	return names[o];
}

/* The option called name (dashes or underscores), or -1. */
static int
find_option(const char *name, size_t len)
{
	for (int o = 0; o < OPT_COUNT; o++) {
		const char *n = options[o].name;
		size_t i;

		if (strlen(n) != len)
			continue;
		for (i = 0; i < len; i++) {
			char c = name[i] == '_' ? '-' : name[i];

			if (c != n[i])
				break;
		}
		if (i == len)
			return o;
	}
	return -1;
}

enum status
ctl_args_parse(struct ctl_args *out, uint32_t allowed, int argc, char **argv, char *err,
               size_t errlen)
{
	struct ctl_args a;
	int only_positional = 0;

	memset(&a, 0, sizeof(a));
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq;
		size_t len;
		int o;

		if (only_positional || arg[0] != '-' || arg[1] != '-' || arg[2] == '\0') {
			if (!only_positional && strcmp(arg, "--") == 0) {
				only_positional = 1;
				continue;
			}
			if (a.n_pos == CTL_MAX_POSITIONS) {
				snprintf(err, errlen, "too many arguments (at \"%s\")", arg);
				return STATUS_INVALID;
			}
			a.pos[a.n_pos++] = arg;
			continue;
		}
		eq = strchr(arg + 2, '=');
		len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		o = find_option(arg + 2, len);
		if (o < 0 || (allowed & CTL_OPT(o)) == 0) {
			snprintf(err, errlen, "unknown option %.*s for this command", (int)len + 2,
			         arg);
			return STATUS_INVALID;
		}
		if (!options[o].has_value) {
			if (eq != NULL) {
				snprintf(err, errlen, "%s takes no value", ctl_args_name(o));
				return STATUS_INVALID;
			}
			a.opt[o] = "";
			continue;
		}
		if (eq != NULL) {
			a.opt[o] = eq + 1;
		} else if (i + 1 < argc) {
			a.opt[o] = argv[++i];
		} else {
			snprintf(err, errlen, "%s needs a value", ctl_args_name(o));
			return STATUS_INVALID;
		}
	}
	*out = a;
	return STATUS_OK;
}

int
ctl_args_has(const struct ctl_args *a, enum ctl_opt o)
{
	return a->opt[o] != NULL;
}

enum status
ctl_args_int(const struct ctl_args *a, enum ctl_opt o, int64_t min, int64_t max, int64_t *out,
             char *err, size_t errlen)
{
	const char *text = a->opt[o];
	char *end = NULL;
	long long v;

	if (text == NULL || text[0] == '\0') {
		snprintf(err, errlen, "%s needs a number", ctl_args_name(o));
		return STATUS_INVALID;
	}
	v = strtoll(text, &end, 10);
	if (*end != '\0' || v < min || v > max) {
		snprintf(err, errlen, "%s: \"%s\" is not a whole number in %lld..%lld",
		         ctl_args_name(o), text, (long long)min, (long long)max);
		return STATUS_INVALID;
	}
	*out = v;
	return STATUS_OK;
}
