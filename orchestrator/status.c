/* Names of status codes. */
#include "status.h"

const char *
status_name(enum status st)
{
	switch (st) {
	case STATUS_OK:
		return "ok";
	case STATUS_NOT_FOUND:
		return "not_found";
	case STATUS_DUPLICATE:
		return "duplicate";
	case STATUS_INVALID:
		return "invalid";
	case STATUS_CONFIG:
		return "config";
	case STATUS_TOO_LARGE:
		return "too_large";
	case STATUS_DECODE:
		return "decode";
	case STATUS_DB:
		return "db";
	case STATUS_DB_RETRY:
		return "db_retry";
	case STATUS_UNAVAILABLE:
		return "unavailable";
	case STATUS_NATS:
		return "nats";
	case STATUS_TIMEOUT:
		return "timeout";
	case STATUS_IO:
		return "io";
	case STATUS_NOMEM:
		return "nomem";
	case STATUS_OVERLOADED:
		return "overloaded";
	}
	return "unknown";
}
