/* End-to-end fixture: one schema, subject prefix and streams per test; real sagad and participants. */
#include "flow.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

void
flow_setup(struct flow *f, const char *tag)
{
	char out[8192];
	char err[512];
	const char *argv[3];

	memset(f, 0, sizeof(*f));
	harness_unique_name(f->schema, sizeof(f->schema), tag);
	snprintf(f->prefix, sizeof(f->prefix), "%s", f->schema);
	snprintf(f->stream, sizeof(f->stream), "%s", f->schema);
	for (char *p = f->stream; *p != '\0'; p++)
		*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	snprintf(f->env_store[0], sizeof(f->env_store[0]), "SAGAD_DB_SCHEMA=%s", f->schema);
	snprintf(f->env_store[1], sizeof(f->env_store[1]), "SAGAD_SUBJECT_PREFIX=%s", f->prefix);
	snprintf(f->env_store[2], sizeof(f->env_store[2]), "SAGAD_STREAM_PREFIX=%s", f->stream);
	for (int i = 0; i < 3; i++)
		f->env[i] = f->env_store[i];
	f->env[3] = NULL;

	argv[0] = harness_bin("SAGAD_BIN");
	argv[2] = NULL;
	argv[1] = "migrate";
	cr_assert_eq(harness_run(argv, f->env, out, sizeof(out), 60000), 0, "migrate:\n%s", out);
	argv[1] = "check";
	cr_assert_eq(harness_run(argv, f->env, out, sizeof(out), 60000), 0, "check:\n%s", out);

	cr_assert_eq(config_init(&f->cfg), STATUS_OK);
	cr_assert_eq(config_set(&f->cfg, "nats_url", harness_nats_url(), err, sizeof(err)),
	             STATUS_OK);
	/* Not "sagad": the test's own client must not pass for sagad in the server's lists. */
	cr_assert_eq(config_set(&f->cfg, "nats_name", "sagad-test", err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(&f->cfg, "subject_prefix", f->prefix, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(&f->cfg, "stream_prefix", f->stream, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(bus_connect(&f->bus, &f->cfg, err, sizeof(err)), STATUS_OK, "%s", err);
}

void
flow_dump_logs(struct flow *f)
{
	static char buf[65536];

	for (int i = 0; i < f->n_procs; i++) {
		size_t n = harness_read_file(f->logs[i], buf, sizeof(buf));
		const char *tail = n > 4000 ? buf + n - 4000 : buf;

		fprintf(stderr, "---- %s (last 4000 bytes)\n%s\n", f->logs[i], tail);
	}
}

void
flow_teardown(struct flow *f)
{
	for (int i = 0; i < f->n_procs; i++) {
		if (f->procs[i] > 0) {
			kill(f->procs[i], SIGCONT);
			kill(f->procs[i], SIGTERM);
		}
	}
	int bad = -1, bad_rc = 0;

	for (int i = 0; i < f->n_procs; i++) {
		int rc = f->procs[i] > 0 ? harness_wait(f->procs[i], 10000) : 0;

		if (rc == -1) {
			kill(f->procs[i], SIGKILL);
			waitpid(f->procs[i], NULL, 0);
		}
		/* A clean stop exits 0: a sanitizer report or a crash on the way out does not. */
		if (rc != 0 && bad < 0) {
			bad = i;
			bad_rc = rc;
		}
	}
	if (bad >= 0)
		flow_dump_logs(f);
	for (int i = 0; i < f->n_procs; i++) {
		if (getenv("SAGAD_TEST_KEEP_LOGS") == NULL)
			unlink(f->logs[i]);
	}
	bus_close(f->bus);
	config_free(&f->cfg);
	f->bus = NULL;
	cr_assert_eq(bad, -1, "child %d did not stop cleanly on SIGTERM (status %d)", bad, bad_rc);
}

/* Which runner URL each kind of process gets (scripts/services.sh, docs/security.md). */
static void
role_overrides(const char *role, const char **nats, const char **db)
{
	char upper[32];
	size_t i = 0;

	for (; role[i] != '\0' && i + 1 < sizeof(upper); i++)
		upper[i] = (char)(role[i] >= 'a' && role[i] <= 'z' ? role[i] - 32 : role[i]);
	upper[i] = '\0';
	*nats = NULL;
	*db = NULL;
	if (strcmp(role, "sagad") == 0)
		*db = harness_database_url_as("SERVICE"); /* NATS: SAGAD_NATS_URL is sagad's */
	else
		*nats = harness_nats_url_as(upper);
}

void
flow_env_as(struct flow *f, const char *role, const char **env, size_t cap,
            const char *const *extra)
{
	static char store[2][2][1200]; /* [slot][nats, db]: two lists may be alive at once */
	static int slot;
	const char *nats, *db;
	size_t n = 0;
	char(*own)[1200] = store[slot];

	slot ^= 1;
	role_overrides(role, &nats, &db);
	for (int k = 0; f->env[k] != NULL && n + 1 < cap; k++)
		env[n++] = f->env[k];
	if (nats != NULL && n + 1 < cap) {
		snprintf(own[0], sizeof(own[0]), "SAGAD_NATS_URL=%s", nats);
		env[n++] = own[0];
	}
	if (db != NULL && n + 1 < cap) {
		snprintf(own[1], sizeof(own[1]), "SAGAD_DATABASE_URL=%s", db);
		env[n++] = own[1];
	}
	for (int k = 0; extra != NULL && extra[k] != NULL && n + 1 < cap; k++)
		env[n++] = extra[k];
	env[n] = NULL;
}

unsigned
flow_define(struct flow *f, const char *yaml)
{
	char path[256];
	char out[8192];
	const char *env[32];
	const char *argv[4];
	FILE *fp;
	unsigned version = 0;
	const char *v;

	snprintf(path, sizeof(path), "/tmp/%s_def.yaml", f->schema);
	fp = fopen(path, "w");
	cr_assert_not_null(fp);
	fputs(yaml, fp);
	fclose(fp);
	argv[0] = harness_bin("SAGACTL_BIN");
	argv[1] = "define";
	argv[2] = path;
	argv[3] = NULL;
	flow_env_as(f, "operator", env, sizeof(env) / sizeof(env[0]), NULL);
	cr_assert_eq(harness_run(argv, env, out, sizeof(out), 30000), 0, "define:\n%s", out);
	unlink(path);
	v = strstr(out, " v");
	cr_assert_not_null(v, "%s", out);
	version = (unsigned)strtoul(v + 2, NULL, 10);
	return version;
}

static int
spawn(struct flow *f, const char *const *argv, const char *role, const char *const *extra,
      const char *name)
{
	const char *env[32];
	int i = f->n_procs;

	cr_assert_lt(i, FLOW_MAX_PROCS);
	flow_env_as(f, role, env, sizeof(env) / sizeof(env[0]), extra);
	{
		char path[sizeof(f->logs[i])];

		snprintf(path, sizeof(path), "/tmp/%s_%s_%d.log", f->schema, name, i);
		memcpy(f->logs[i], path, sizeof(path));
	}
	f->procs[i] = harness_spawn(argv, env, f->logs[i]);
	f->n_procs++;
	return i;
}

static void
wait_for_log(struct flow *f, int i, const char *needle)
{
	static char buf[65536];

	for (int t = 0; t < 400; t++) {
		harness_read_file(f->logs[i], buf, sizeof(buf));
		if (strstr(buf, needle) != NULL)
			return;
		usleep(25 * 1000);
	}
	flow_dump_logs(f);
	cr_assert_fail("%s never logged %s", f->logs[i], needle);
}

int
flow_start_sagad(struct flow *f, const char *const *extra)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "run", NULL};
	int i = spawn(f, argv, "sagad", extra, "sagad");

	wait_for_log(f, i, "\"msg\":\"ready");
	return i;
}

int
flow_start_participant(struct flow *f, const char *service, const char *const *args)
{
	char bin[512];
	char svc[64];
	const char *argv[16];
	int n = 0;
	int i;

	snprintf(bin, sizeof(bin), "%s", harness_bin("SAGA_PARTICIPANT_BIN"));
	snprintf(svc, sizeof(svc), "--service=%s", service);
	argv[n++] = bin;
	argv[n++] = svc;
	for (int k = 0; args != NULL && args[k] != NULL && n < 15; k++)
		argv[n++] = args[k];
	argv[n] = NULL;
	i = spawn(f, argv, service, NULL, service);
	wait_for_log(f, i, "ready");
	return i;
}

void
flow_signal(struct flow *f, int i, int sig)
{
	cr_assert_lt(i, f->n_procs);
	kill(f->procs[i], sig);
	if (sig == SIGKILL) {
		waitpid(f->procs[i], NULL, 0);
		f->procs[i] = 0;
	}
}

enum status
flow_start_saga(struct flow *f, const char *saga, const char *input, const char *key,
                struct start_answer *a)
{
	struct bytes req = {0};
	struct bus_msg *reply = NULL;
	char subject[256];
	char err[512];
	enum status st;

	cr_assert_eq(codec_encode_start_request(saga, 0,
	                                        (struct bytes){(uint8_t *)input, strlen(input)},
	                                        key, NULL, &req),
	             STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.start.%s", f->prefix, saga);
	st = bus_request(f->bus, subject, NULL, 0, req.data, req.len, 10000, &reply, err,
	                 sizeof(err));
	free(req.data);
	if (st != STATUS_OK)
		return st;
	st = codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), a, err,
	                               sizeof(err));
	bus_msg_free(reply);
	return st;
}

const char *
flow_sql(struct flow *f, const char *sql)
{
	return harness_sql(f->schema, sql);
}

long
flow_sql_long(struct flow *f, const char *sql)
{
	return strtol(flow_sql(f, sql), NULL, 10);
}

int
flow_wait_settled(struct flow *f, int min_sagas, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 100) {
		long total = flow_sql_long(f, "SELECT count(*) FROM saga_instance");
		long active = flow_sql_long(f, "SELECT count(*) FROM saga_instance"
		                               " WHERE state IN ('running', 'compensating')");

		if (total >= min_sagas && active == 0)
			return 1;
		usleep(100 * 1000);
	}
	return 0;
}

int
flow_http_port(struct flow *f, int i)
{
	static char buf[65536];
	const char *p;

	harness_read_file(f->logs[i], buf, sizeof(buf));
	p = strstr(buf, "http listening on 127.0.0.1:");
	cr_assert_not_null(p, "no http port in %s", f->logs[i]);
	return atoi(p + strlen("http listening on 127.0.0.1:"));
}

int
flow_http(int port, const char *method, const char *path, const char *headers, const char *body,
          char *out, size_t outlen)
{
	struct sockaddr_in addr;
	char req[8192];
	size_t got = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int n;

	cr_assert_geq(fd, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0, "connect to :%d",
	             port);
	n = snprintf(req, sizeof(req),
	             "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n%s", method,
	             path, headers != NULL ? headers : "", body != NULL ? strlen(body) : 0,
	             body != NULL ? body : "");
	cr_assert_eq(write(fd, req, (size_t)n), n);
	while (got + 1 < outlen) {
		ssize_t r = read(fd, out + got, outlen - 1 - got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	out[got] = '\0';
	close(fd);
	cr_assert(strncmp(out, "HTTP/1.", 7) == 0, "not an HTTP response: %s", out);
	return atoi(out + 9);
}

void
flow_assert_invariants(struct flow *f, char (*accepted)[SAGA_ID_LEN + 1], int n_accepted)
{
	PGconn *conn = PQconnectdb(harness_database_url());
	PGresult *res;
	char sql[256];

	cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
	snprintf(sql, sizeof(sql), "SET search_path TO %s", f->schema);
	PQclear(PQexec(conn, sql));
	if (accepted != NULL) {
		PQclear(PQexec(conn, "CREATE TEMP TABLE accepted_starts (saga_id uuid)"));
		for (int i = 0; i < n_accepted; i++) {
			const char *p[1] = {accepted[i]};

			PQclear(PQexecParams(conn, "INSERT INTO accepted_starts VALUES ($1::uuid)",
			                     1, NULL, p, NULL, NULL, 0));
		}
	}
	/* I5 needs the relay to have caught up: give it a moment. */
	for (int i = 0; i < 50 && flow_sql_long(f, "SELECT count(*) FROM saga_outbox") > 0; i++)
		usleep(100 * 1000);
	res = PQexec(conn, "SELECT invariant, check_name, violations, description"
	                   " FROM saga_check_invariants()");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
	for (int r = 0; r < PQntuples(res); r++) {
		if (PQgetisnull(res, r, 2))
			continue; /* not applicable here */
		cr_expect_eq(strtol(PQgetvalue(res, r, 2), NULL, 10), 0,
		             "%s %s violated %s times: %s", PQgetvalue(res, r, 0),
		             PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), PQgetvalue(res, r, 3));
	}
	PQclear(res);
	PQfinish(conn);
}

pid_t
flow_sagactl_spawn(struct flow *f, const char *const *args, const char *out_path,
                   const char *err_path)
{
	const char *argv[40];
	const char *env[32];
	int n = 0;
	pid_t pid;

	flow_env_as(f, "operator", env, sizeof(env) / sizeof(env[0]), NULL);
	argv[n++] = harness_bin("SAGACTL_BIN");
	for (int k = 0; args[k] != NULL && n < 39; k++)
		argv[n++] = args[k];
	argv[n] = NULL;
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (out >= 0 && err >= 0) {
			dup2(out, STDOUT_FILENO);
			dup2(err, STDERR_FILENO);
			close(out);
			close(err);
		}
		for (int k = 0; env[k] != NULL; k++) {
			char key[128];
			const char *eq = strchr(env[k], '=');

			snprintf(key, sizeof(key), "%.*s", (int)(eq - env[k]), env[k]);
			setenv(key, eq + 1, 1);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int
flow_sagactl(struct flow *f, const char *const *args, char *out, size_t outlen, char *err,
             size_t errlen)
{
	char out_path[] = "/tmp/sagactl-out.XXXXXX";
	char err_path[] = "/tmp/sagactl-err.XXXXXX";
	int fo = mkstemp(out_path), fe = mkstemp(err_path);
	pid_t pid;
	int rc;

	cr_assert(fo >= 0 && fe >= 0);
	close(fo);
	close(fe);
	pid = flow_sagactl_spawn(f, args, out_path, err_path);
	rc = harness_wait(pid, 120000);
	if (rc == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	if (out != NULL)
		harness_read_file(out_path, out, outlen);
	if (err != NULL)
		harness_read_file(err_path, err, errlen);
	unlink(out_path);
	unlink(err_path);
	return rc;
}
