/* Integration test harness: service URLs, unique names, child processes, SQL checks. */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *
required_env(const char *name)
{
	const char *v = getenv(name);

	cr_assert(v != NULL && v[0] != '\0',
	          "%s is not set: run integration tests through scripts/test.sh "
	          "(or scripts/services.sh -- meson test -C build --suite integration)",
	          name);
	return v;
}

const char *
harness_database_url(void)
{
	return required_env("SAGAD_DATABASE_URL");
}

const char *
harness_nats_url(void)
{
	const char *admin = harness_nats_url_as("ADMIN");

	return admin != NULL ? admin : required_env("SAGAD_NATS_URL");
}

/* getenv(prefix + role), or NULL when unset or empty. */
static const char *
role_env(const char *prefix, const char *role)
{
	char name[96];
	const char *v;

	snprintf(name, sizeof(name), "%s%s", prefix, role);
	v = getenv(name);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

const char *
harness_nats_url_as(const char *role)
{
	return role_env("SAGAD_NATS_URL_", role);
}

const char *
harness_database_url_as(const char *role)
{
	return role_env("SAGAD_DATABASE_URL_", role);
}

static const char *const nats_roles[] = {"ADMIN", "OPERATOR", "CLIENT",
                                         "STOCK", "PAYMENTS", "SHIPPING"};
static const char *const database_roles[] = {"SERVICE", "OPERATOR"};

static void
drop_roles(const char *prefix, const char *const *roles, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char name[96];

		snprintf(name, sizeof(name), "%s%s", prefix, roles[i]);
		cr_assert_eq(unsetenv(name), 0);
	}
}

void
harness_use_private_nats(const char *url)
{
	cr_assert_eq(setenv("SAGAD_NATS_URL", url, 1), 0);
	drop_roles("SAGAD_NATS_URL_", nats_roles, sizeof(nats_roles) / sizeof(nats_roles[0]));
}

void
harness_use_private_database(const char *url)
{
	cr_assert_eq(setenv("SAGAD_DATABASE_URL", url, 1), 0);
	drop_roles("SAGAD_DATABASE_URL_", database_roles,
	           sizeof(database_roles) / sizeof(database_roles[0]));
}

const char *
harness_bin(const char *env_name)
{
	return required_env(env_name);
}

void
harness_unique_name(char *out, size_t outlen, const char *prefix)
{
	static unsigned counter;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(out, outlen, "%s_%ld_%u_%lx", prefix, (long)getpid(), ++counter,
	         (unsigned long)(ts.tv_nsec ^ (ts.tv_sec << 20)) & 0xffffff);
}

pid_t
harness_spawn(const char *const argv[], const char *const overrides[], const char *log_path)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		for (size_t i = 0; overrides != NULL && overrides[i] != NULL; i++) {
			char key[128];
			const char *eq = strchr(overrides[i], '=');

			snprintf(key, sizeof(key), "%.*s", (int)(eq - overrides[i]), overrides[i]);
			if (eq[1] == '\0')
				unsetenv(key);
			else
				setenv(key, eq + 1, 1);
		}
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int
harness_wait(pid_t pid, int timeout_ms)
{
	struct timespec nap = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};

	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		int status = 0;
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			return 128 + WTERMSIG(status);
		}
		nanosleep(&nap, NULL);
	}
	return -1;
}

size_t
harness_read_file(const char *path, char *out, size_t outlen)
{
	FILE *f = fopen(path, "rb");
	size_t n = 0;

	out[0] = '\0';
	if (f == NULL)
		return 0;
	n = fread(out, 1, outlen - 1, f);
	out[n] = '\0';
	fclose(f);
	return n;
}

int
harness_run(const char *const argv[], const char *const overrides[], char *out, size_t outlen,
            int timeout_ms)
{
	char log_path[] = "/tmp/sagad-test-out.XXXXXX";
	int fd = mkstemp(log_path);
	pid_t pid;
	int rc;

	cr_assert_neq(fd, -1);
	close(fd);
	pid = harness_spawn(argv, overrides, log_path);
	rc = harness_wait(pid, timeout_ms);
	if (rc == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	harness_read_file(log_path, out, outlen);
	unlink(log_path);
	return rc;
}

const char *
harness_sql(const char *schema, const char *sql)
{
	static char cell[4096];
	PGconn *conn = PQconnectdb(harness_database_url());
	PGresult *res;

	cr_assert_eq(PQstatus(conn), CONNECTION_OK, "test connection: %s", PQerrorMessage(conn));
	if (schema != NULL) {
		char set[256];

		snprintf(set, sizeof(set), "SET search_path TO %s", schema);
		PQclear(PQexec(conn, set));
	}
	res = PQexec(conn, sql);
	cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK,
	          "%s: %s", sql, PQerrorMessage(conn));
	cell[0] = '\0';
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
		snprintf(cell, sizeof(cell), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(conn);
	return cell;
}

int
harness_count_lines(const char *text)
{
	int n = 0;
	int in_line = 0;

	for (const char *p = text; *p != '\0'; p++) {
		if (*p == '\n') {
			n += in_line;
			in_line = 0;
		} else {
			in_line = 1;
		}
	}
	return n + in_line;
}
