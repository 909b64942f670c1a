/* End-to-end fixture: one schema, subject prefix and streams per test; real sagad and participants. */
#ifndef SAGAD_TEST_FLOW_H
#define SAGAD_TEST_FLOW_H

#include <sys/types.h>

#include "bus.h"
#include "codec.h"
#include "config.h"

#define FLOW_MAX_PROCS 8

struct flow {
	char schema[96];                /* PostgreSQL schema of this test */
	char prefix[96];                /* subject prefix */
	char stream[96];                /* stream prefix */
	char env_store[4][200];         /* SAGAD_* overrides shared by every process */
	const char *env[12];            /* NULL-terminated overrides for children */
	pid_t procs[FLOW_MAX_PROCS];    /* children still running */
	char logs[FLOW_MAX_PROCS][160]; /* their log files */
	int n_procs;                    /* children started */
	struct config cfg;              /* settings for the in-test bus client */
	struct bus *bus;                /* NATS client of the test */
};

/*
 * Unique names, migrate (owner login), create the streams (sagad check, NATS
 * user sagad), connect the test's bus (harness_nats_url: the admin user).
 */
void flow_setup(struct flow *f, const char *tag);

/* Stop every child (TERM, then KILL), close the bus. */
void flow_teardown(struct flow *f);

/*
 * The overrides a child in role gets: the test's (f->env), then the runner's
 * URL for that role (scripts/services.sh: "sagad" connects to PostgreSQL as
 * the sagad_service login; "stock", "payments", "shipping", "operator" (for
 * sagactl) and "client" use their own NATS user), then extra. env receives
 * at most cap entries including the NULL; it points to storage that stays
 * valid until the next call but one.
 */
void flow_env_as(struct flow *f, const char *role, const char **env, size_t cap,
                 const char *const *extra);

/* Register a YAML definition given as text; returns the version. */
unsigned flow_define(struct flow *f, const char *yaml);

/*
 * Start sagad with extra "KEY=VALUE" overrides (NULL-terminated, may be NULL);
 * waits for ready. It connects to PostgreSQL as the runner's sagad_service
 * login when there is one (flow_env_as), to NATS as SAGAD_NATS_URL (user sagad).
 */
int flow_start_sagad(struct flow *f, const char *const *extra);

/* Start one example participant service (on its own NATS user) with extra arguments. */
int flow_start_participant(struct flow *f, const char *service, const char *const *args);

/* Send SIGKILL / SIGSTOP / SIGCONT to child index i. */
void flow_signal(struct flow *f, int i, int sig);

/* Start a saga over request/reply; fills *a and returns the status. */
enum status flow_start_saga(struct flow *f, const char *saga, const char *input, const char *key,
                            struct start_answer *a);

/* Wait until no saga is running or compensating (and at least min_sagas exist); 0 on timeout. */
int flow_wait_settled(struct flow *f, int min_sagas, int timeout_ms);

/* First cell of a query run in the test's schema. */
const char *flow_sql(struct flow *f, const char *sql);

/* Integer result of a query. */
long flow_sql_long(struct flow *f, const char *sql);

/* The HTTP port child i (a sagad) logged; fails the test when it logged none. */
int flow_http_port(struct flow *f, int i);

/*
 * One HTTP/1.0 request to 127.0.0.1:port; returns the status code and copies
 * the whole response (headers and body) into out.
 */
int flow_http(int port, const char *method, const char *path, const char *headers, const char *body,
              char *out, size_t outlen);

/*
 * Run saga_check_invariants() (migration 0006) with the given accepted saga
 * ids (may be NULL) and fail the test on any violation. Call when idle.
 */
void flow_assert_invariants(struct flow *f, char (*accepted)[SAGA_ID_LEN + 1], int n_accepted);

/*
 * Run sagactl (SAGACTL_BIN) with args (NULL-terminated) in this test's schema,
 * subject and stream prefixes, as the NATS user operator; stdout goes to out and stderr to err (either
 * may be NULL). Returns the exit code, or -1 when it ran for over 2 minutes.
 */
int flow_sagactl(struct flow *f, const char *const *args, char *out, size_t outlen, char *err,
                 size_t errlen);

/* Start sagactl with args without waiting (stdout to out_path, stderr to err_path). */
pid_t flow_sagactl_spawn(struct flow *f, const char *const *args, const char *out_path,
                         const char *err_path);

/* Print the tail of every child's log (for failing assertions). */
void flow_dump_logs(struct flow *f);

#endif /* SAGAD_TEST_FLOW_H */
