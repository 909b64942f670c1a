/* Status codes every fallible function of sagad returns. */
#ifndef SAGAD_STATUS_H
#define SAGAD_STATUS_H

/* Mark a function whose status the caller must look at (PgBouncer's _MUSTCHECK). */
#define MUSTCHECK __attribute__((warn_unused_result))

enum status {
	STATUS_OK = 0,    /* success */
	STATUS_NOT_FOUND, /* the thing asked for does not exist (an outcome, not an error) */
	STATUS_DUPLICATE, /* the thing already exists (unique violation, seen key) */
	STATUS_INVALID,   /* bad input: the error buffer says which field and why */
	STATUS_CONFIG,    /* bad configuration */
	STATUS_TOO_LARGE, /* input over a size limit, refused before decoding */
	STATUS_DECODE,    /* input could not be decoded */
	STATUS_DB,        /* database error that a retry will not fix */
	STATUS_DB_RETRY, /* transient database error: retry the transaction (40001, 40P01, lost connection) */
	STATUS_UNAVAILABLE, /* a server (PostgreSQL or NATS) cannot be reached */
	STATUS_NATS,        /* NATS / JetStream error */
	STATUS_TIMEOUT,     /* an operation did not finish in time */
	STATUS_IO,          /* file or OS error */
	STATUS_NOMEM,       /* out of memory */
	STATUS_OVERLOADED,  /* an admission limit was reached */
};

/* Short lower-case name of a status, for logs ("not_found"). Never NULL. */
const char *status_name(enum status st);

#endif /* SAGAD_STATUS_H */
