/* Integration test harness: service URLs, unique names, child processes, SQL checks. */
#ifndef SAGAD_TEST_HARNESS_H
#define SAGAD_TEST_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/* SAGAD_DATABASE_URL of the services the test runner started: the owner (superuser) login. */
const char *harness_database_url(void);

/*
 * The NATS URL of the test's own client: SAGAD_NATS_URL_ADMIN when
 * scripts/services.sh set one (every permission: the test sets up and
 * inspects), else SAGAD_NATS_URL.
 */
const char *harness_nats_url(void);

/*
 * The URL a process in role should use, or NULL when the runner gave none
 * (then SAGAD_NATS_URL / SAGAD_DATABASE_URL apply). NATS roles (services.sh,
 * docs/security.md): "ADMIN", "OPERATOR", "CLIENT", "STOCK", "PAYMENTS",
 * "SHIPPING" (SAGAD_NATS_URL_<role>; SAGAD_NATS_URL itself is sagad's).
 * Database roles: "SERVICE", "OPERATOR" (SAGAD_DATABASE_URL_<role>).
 */
const char *harness_nats_url_as(const char *role);
const char *harness_database_url_as(const char *role);

/*
 * Point this test process (and the children it starts) at a private server
 * without users: sets SAGAD_NATS_URL / SAGAD_DATABASE_URL to url and drops
 * the role URLs, which belong to the runner's servers.
 */
void harness_use_private_nats(const char *url);
void harness_use_private_database(const char *url);

/* Path of a built program from the test environment (SAGAD_BIN, SAGACTL_BIN). */
const char *harness_bin(const char *env_name);

/* A name no other test or run uses: "<prefix>_<pid>_<n>_<random>", lower case. */
void harness_unique_name(char *out, size_t outlen, const char *prefix);

/*
 * Start argv[0] with the current environment plus overrides ("KEY=VALUE",
 * NULL-terminated; "KEY=" unsets). stdout and stderr go to log_path.
 */
pid_t harness_spawn(const char *const argv[], const char *const overrides[], const char *log_path);

/* Wait for pid at most timeout_ms; returns its exit code, 128+signal, or -1 on timeout. */
int harness_wait(pid_t pid, int timeout_ms);

/* Spawn, wait (killing after timeout_ms), and read its output into out. */
int harness_run(const char *const argv[], const char *const overrides[], char *out, size_t outlen,
                int timeout_ms);

/* Run one SQL statement in schema (may be NULL) and return the first cell, or "" (static). */
const char *harness_sql(const char *schema, const char *sql);

/* Read a whole file into out (truncated); returns bytes read. */
size_t harness_read_file(const char *path, char *out, size_t outlen);

/* Number of non-empty lines in text. */
int harness_count_lines(const char *text);

#endif /* SAGAD_TEST_HARNESS_H */
