/* Private servers for one test: nats-server (alone or a three-node cluster) and PostgreSQL. */
#include "servers.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define MAX_REGISTERED 16
#define START_TRIES    5 /* fresh ports when a picked one was taken meanwhile */

/* Every server started by this process, for servers_cleanup(). Callers keep them alive. */
static struct nats_server *nats_registry[MAX_REGISTERED];
static struct pg_server *pg_registry[MAX_REGISTERED];
static int cleanup_registered;

static void
nap_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
remember(void **registry, void *server)
{
	if (!cleanup_registered) {
		atexit(servers_cleanup);
		cleanup_registered = 1;
	}
	for (int i = 0; i < MAX_REGISTERED; i++) {
		if (registry[i] == server)
			return;
	}
	for (int i = 0; i < MAX_REGISTERED; i++) {
		if (registry[i] == NULL) {
			registry[i] = server;
			return;
		}
	}
	cr_assert_fail("more than %d private servers in one test", MAX_REGISTERED);
}

/* Bind n sockets to port 0 at once, so the kernel hands out n distinct free ports. */
static void
pick_ports(int *ports, int n)
{
	int fds[16];

	cr_assert_leq(n, 16);
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a;
		socklen_t len = sizeof(a);

		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		cr_assert_geq(fds[i], 0, "socket: %s", strerror(errno));
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		cr_assert_eq(bind(fds[i], (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s",
		             strerror(errno));
		cr_assert_eq(getsockname(fds[i], (struct sockaddr *)&a, &len), 0);
		ports[i] = ntohs(a.sin_port);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Absolute path of a program on PATH (plus the sbin directories), or NULL. */
static const char *
find_program(const char *name, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	char dirs[4096];

	snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/local/sbin:/usr/bin",
	         path != NULL ? path : "");
	for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d != NULL;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(out, outlen, "%s/%s", d, name);
		if (access(out, X_OK) == 0)
			return out;
	}
	return NULL;
}

static const char *
pg_bin(const char *program, char *out, size_t outlen)
{
	const char *dir = getenv("SAGAD_TEST_PG_BIN");

	snprintf(out, outlen, "%s/%s",
	         dir != NULL && dir[0] != '\0' ? dir : "/usr/lib/postgresql/15/bin", program);
	cr_assert_eq(access(out, X_OK), 0, "%s not found: run scripts/install-deps.sh", out);
	return out;
}

/*
 * Fork and exec argv with output appended to log_path. With run_as_postgres
 * the child drops to the postgres user first. The child gets deathsig when
 * this process dies, so no server outlives a crashed or timed-out test.
 */
static pid_t
spawn_server(const char *const argv[], const char *log_path, int run_as_postgres, int deathsig)
{
	uid_t uid = 0;
	gid_t gid = 0;
	pid_t parent = getpid();
	pid_t pid;

	if (run_as_postgres) {
		struct passwd *pw = getpwnam("postgres");

		cr_assert_not_null(pw, "no postgres user: run scripts/install-deps.sh");
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	}
	pid = fork();
	cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int devnull = open("/dev/null", O_RDONLY);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		if (devnull >= 0) {
			dup2(devnull, STDIN_FILENO);
			close(devnull);
		}
		if (chdir("/") != 0)
			_exit(126);
		if (run_as_postgres &&
		    (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
			_exit(126);
		/* After setuid: a credential change clears the parent-death signal. */
		prctl(PR_SET_PDEATHSIG, deathsig);
		if (getppid() != parent)
			_exit(125); /* the test died before the prctl */
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* Wait for pid to exit for at most timeout_ms; returns its wait status, or -1. */
static int
reap(pid_t pid, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		int status = 0;
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid || (r == -1 && errno == ECHILD))
			return r == pid ? status : 0;
		if (now_ms() >= deadline)
			return -1;
		nap_ms(20);
	}
}

/* Signal, wait, and SIGKILL what did not exit in time. Returns the wait status. */
static int
stop_pid(pid_t pid, int sig, int timeout_ms)
{
	int status;

	if (pid <= 0)
		return 0;
	kill(pid, sig);
	status = reap(pid, timeout_ms);
	if (status == -1) {
		kill(pid, SIGKILL);
		status = reap(pid, 10000);
	}
	return status;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void
remove_tree(char *dir)
{
	if (dir[0] == '\0' || getenv("SAGAD_TEST_KEEP_LOGS") != NULL)
		return;
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	dir[0] = '\0';
}

static void
make_dir(char *dir, size_t dirlen, const char *tag, const char *kind)
{
	snprintf(dir, dirlen, "/tmp/sagad-%s-%s-XXXXXX", tag, kind);
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
	chmod(dir, 0711); /* postgres may traverse it */
}

static int
log_says(const char *path, const char *needle)
{
	static char buf[1 << 16];

	harness_read_file(path, buf, sizeof(buf));
	return strstr(buf, needle) != NULL;
}

/* ---- HTTP ---- */

int
servers_http_get(int port, const char *path, char *out, size_t outlen)
{
	struct sockaddr_in a;
	struct pollfd pfd;
	char req[512];
	size_t got = 0;
	int64_t deadline = now_ms() + 3000;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int n;
	const char *body;

	out[0] = '\0';
	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS)
		goto fail;
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, 2000) != 1 || (pfd.revents & (POLLERR | POLLHUP)) != 0)
		goto fail;
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n)
		goto fail;
	while (got + 1 < outlen && now_ms() < deadline) {
		ssize_t r;

		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)(deadline - now_ms())) != 1)
			break;
		r = read(fd, out + got, outlen - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	out[got] = '\0';
	close(fd);
	if (strncmp(out, "HTTP/1.", 7) != 0)
		return -1;
	n = atoi(out + 9);
	body = strstr(out, "\r\n\r\n");
	if (body != NULL)
		memmove(out, body + 4, strlen(body + 4) + 1);
	return n;
fail:
	close(fd);
	return -1;
}

/* ---- NATS ---- */

/* Start the process of n (ports and files already set). */
static void
nats_spawn(struct nats_server *n)
{
	char bin[512], log_path[200], store[200], conf[200], port[16], mport[16];

	cr_assert_not_null(find_program("nats-server", bin, sizeof(bin)),
	                   "nats-server not found: run scripts/install-deps.sh");
	snprintf(log_path, sizeof(log_path), "%s/nats.log", n->dir);
	if (n->cluster_port != 0) {
		const char *argv[] = {bin, "-c", conf, NULL};

		snprintf(conf, sizeof(conf), "%s/nats.conf", n->dir);
		n->pid = spawn_server(argv, log_path, 0, SIGKILL);
	} else {
		const char *argv[] = {bin,   "-a",  "127.0.0.1", "-p",  port, "-m",
		                      mport, "-js", "-sd",       store, NULL};

		snprintf(store, sizeof(store), "%s/store", n->dir);
		snprintf(port, sizeof(port), "%d", n->port);
		snprintf(mport, sizeof(mport), "%d", n->monitor_port);
		n->pid = spawn_server(argv, log_path, 0, SIGKILL);
	}
}

/*
 * Wait until n answers /healthz with 200 (a clustered node: until it listens,
 * when need_js is 0). Returns 0, 1 when the process exited (2 when because
 * a port was taken), or -1 on timeout.
 */
static int
nats_wait_up(struct nats_server *n, int need_js, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	char body[4096];
	char log_path[200];

	snprintf(log_path, sizeof(log_path), "%s/nats.log", n->dir);
	while (now_ms() < deadline) {
		int status = 0;

		if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
			n->pid = 0;
			return log_says(log_path, "address already in use") ? 2 : 1;
		}
		if (need_js ? servers_http_get(n->monitor_port, "/healthz", body, sizeof(body)) ==
		                      200
		            : servers_http_get(n->monitor_port, "/varz", body, sizeof(body)) == 200)
			return 0;
		nap_ms(100);
	}
	return -1;
}

void
servers_nats_start(struct nats_server *n, const char *tag)
{
	char log_path[200];

	memset(n, 0, sizeof(*n));
	make_dir(n->dir, sizeof(n->dir), tag, "nats");
	snprintf(n->name, sizeof(n->name), "%s", tag);
	snprintf(log_path, sizeof(log_path), "%s/nats.log", n->dir);
	remember((void **)nats_registry, n);
	for (int attempt = 0;; attempt++) {
		int ports[2];
		int rc;

		cr_assert_lt(attempt, START_TRIES, "nats-server: no free ports after %d tries",
		             START_TRIES);
		pick_ports(ports, 2);
		n->port = ports[0];
		n->monitor_port = ports[1];
		snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%d", n->port);
		nats_spawn(n);
		rc = nats_wait_up(n, 1, 30000);
		if (rc == 0)
			return;
		if (rc == 2)
			continue;
		stop_pid(n->pid, SIGKILL, 5000);
		n->pid = 0;
		cr_assert_fail("nats-server did not become healthy (%s):\n%s",
		               rc == 1 ? "exited" : "30 s", log_path);
	}
}

static void
write_cluster_conf(const struct nats_server *n, const char *cluster,
                   const struct nats_server nodes[SERVERS_CLUSTER_SIZE])
{
	char path[200];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/nats.conf", n->dir);
	fp = fopen(path, "w");
	cr_assert_not_null(fp, "%s: %s", path, strerror(errno));
	fprintf(fp,
	        "server_name: %s\n"
	        "listen: 127.0.0.1:%d\n"
	        "http: 127.0.0.1:%d\n"
	        "jetstream {\n"
	        "  store_dir: \"%s/store\"\n"
	        "  max_memory_store: 64MB\n"
	        "  max_file_store: 4GB\n"
	        "}\n"
	        "cluster {\n"
	        "  name: %s\n"
	        "  listen: 127.0.0.1:%d\n"
	        "  routes: [\n",
	        n->name, n->port, n->monitor_port, n->dir, cluster, n->cluster_port);
	for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++) {
		if (&nodes[i] != n)
			fprintf(fp, "    nats-route://127.0.0.1:%d\n", nodes[i].cluster_port);
	}
	fprintf(fp, "  ]\n}\n");
	fclose(fp);
}

int
servers_nats_cluster_start(struct nats_server nodes[SERVERS_CLUSTER_SIZE], const char *tag,
                           char *urls, size_t urlslen, int wait_ms)
{
	int64_t began;

	for (int attempt = 0;; attempt++) {
		int ports[3 * SERVERS_CLUSTER_SIZE];
		int taken = 0;

		cr_assert_lt(attempt, START_TRIES, "NATS cluster: no free ports after %d tries",
		             START_TRIES);
		pick_ports(ports, 3 * SERVERS_CLUSTER_SIZE);
		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++) {
			struct nats_server *n = &nodes[i];

			if (attempt == 0) {
				memset(n, 0, sizeof(*n));
				make_dir(n->dir, sizeof(n->dir), tag, "nats");
				snprintf(n->name, sizeof(n->name), "n%d", i + 1);
				remember((void **)nats_registry, n);
			}
			n->port = ports[3 * i];
			n->monitor_port = ports[3 * i + 1];
			n->cluster_port = ports[3 * i + 2];
			snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%d", n->port);
		}
		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++)
			write_cluster_conf(&nodes[i], tag, nodes);
		began = now_ms();
		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++)
			nats_spawn(&nodes[i]);
		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++) {
			int rc = nats_wait_up(&nodes[i], 0, 30000);

			taken = taken || rc == 2;
			cr_assert(rc == 0 || rc == 2,
			          "cluster node %s did not start (%s); log in %s", nodes[i].name,
			          rc == 1 ? "exited" : "30 s", nodes[i].dir);
		}
		if (!taken)
			break;
		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++) {
			stop_pid(nodes[i].pid, SIGKILL, 5000);
			nodes[i].pid = 0;
		}
	}
	urls[0] = '\0';
	for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++) {
		size_t len = strlen(urls);

		snprintf(urls + len, urlslen - len, "%s%s", i > 0 ? "," : "", nodes[i].url);
	}
	/* Elected, and every node healthy (JetStream in contact with the meta leader). */
	while (now_ms() - began < wait_ms) {
		int healthy = 0;
		char body[4096];

		for (int i = 0; i < SERVERS_CLUSTER_SIZE; i++)
			healthy += servers_http_get(nodes[i].monitor_port, "/healthz", body,
			                            sizeof(body)) == 200;
		if (healthy == SERVERS_CLUSTER_SIZE &&
		    servers_nats_meta_leader(nodes, SERVERS_CLUSTER_SIZE) >= 0)
			return (int)(now_ms() - began);
		nap_ms(100);
	}
	return -1;
}

/* The meta leader's name as node i sees it ("" when none); 0 when i does not answer. */
static int
meta_leader_seen(const struct nats_server *n, char *leader, size_t leaderlen, char *jsz,
                 size_t jszlen)
{
	const char *p;
	size_t len;

	leader[0] = '\0';
	if (n->pid <= 0 || servers_http_get(n->monitor_port, "/jsz", jsz, jszlen) != 200)
		return 0;
	p = strstr(jsz, "\"meta_cluster\"");
	if (p == NULL)
		return 1;
	p = strstr(p, "\"leader\"");
	if (p == NULL || (p = strchr(p + 8, '"')) == NULL)
		return 1;
	p++;
	len = strcspn(p, "\"");
	snprintf(leader, leaderlen, "%.*s", (int)len, p);
	return 1;
}

int
servers_nats_meta_leader(const struct nats_server *nodes, int n_nodes)
{
	static char jsz[1 << 16];

	for (int i = 0; i < n_nodes; i++) {
		char leader[64];

		if (!meta_leader_seen(&nodes[i], leader, sizeof(leader), jsz, sizeof(jsz)) ||
		    leader[0] == '\0')
			continue;
		for (int k = 0; k < n_nodes; k++) {
			if (strcmp(nodes[k].name, leader) == 0 && nodes[k].pid > 0)
				return k;
		}
	}
	return -1;
}

int
servers_nats_find_subscriber(const struct nats_server *nodes, int n_nodes, const char *subject)
{
	static char connz[1 << 20];
	char quoted[300];

	snprintf(quoted, sizeof(quoted), "\"%s\"", subject);
	for (int i = 0; i < n_nodes; i++) {
		if (nodes[i].pid > 0 &&
		    servers_http_get(nodes[i].monitor_port, "/connz?subs=1&limit=1024", connz,
		                     sizeof(connz)) == 200 &&
		    strstr(connz, quoted) != NULL)
			return i;
	}
	return -1;
}

void
servers_nats_describe(const struct nats_server *nodes, int n_nodes, char *out, size_t outlen)
{
	static char jsz[1 << 16];

	out[0] = '\0';
	for (int i = 0; i < n_nodes; i++) {
		char leader[64];
		size_t len = strlen(out);
		int up = meta_leader_seen(&nodes[i], leader, sizeof(leader), jsz, sizeof(jsz));

		snprintf(out + len, outlen - len, "%s (pid %d, port %d, %s): %s%s\n", nodes[i].name,
		         (int)nodes[i].pid, nodes[i].port, nodes[i].dir,
		         up ? "meta leader " : "does not answer",
		         up ? (leader[0] != '\0' ? leader : "none") : "");
	}
}

int
servers_nats_stop(struct nats_server *n, int sig)
{
	int status = stop_pid(n->pid, sig, 20000);

	n->pid = 0;
	return status;
}

void
servers_nats_restart(struct nats_server *n)
{
	int rc;

	cr_assert_eq(n->pid, 0, "%s is still running", n->name);
	nats_spawn(n);
	rc = nats_wait_up(n, n->cluster_port == 0, 60000);
	cr_assert_eq(rc, 0, "nats-server %s did not come back on port %d (%s); log in %s", n->name,
	             n->port,
	             rc == 2   ? "port taken"
	             : rc == 1 ? "exited"
	                       : "60 s",
	             n->dir);
}

/* ---- PostgreSQL ---- */

static void
pg_spawn(struct pg_server *p)
{
	char bin[512], data[200], log_path[200], port[32];
	const char *argv[] = {
	        pg_bin("postgres", bin, sizeof(bin)), "-D", data, "-c",
	        "listen_addresses=127.0.0.1", "-c", port, "-c", "unix_socket_directories=",
	        /* Crash semantics need WAL replay, not fsync: no OS crash here. */
	        "-c", "fsync=off", "-c", "max_connections=100", "-c", "shared_buffers=32MB", NULL};

	snprintf(data, sizeof(data), "%s/data", p->dir);
	snprintf(log_path, sizeof(log_path), "%s/postgres.log", p->dir);
	snprintf(port, sizeof(port), "port=%d", p->port);
	/* SIGQUIT: PostgreSQL's immediate shutdown, backends included. */
	p->pid = spawn_server(argv, log_path, 1, SIGQUIT);
}

/* 0 when accepting connections, 1 exited, 2 exited because the port was taken, -1 timeout. */
static int
pg_wait_up(struct pg_server *p, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	char conninfo[128], log_path[200];

	snprintf(conninfo, sizeof(conninfo),
	         "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", p->port);
	snprintf(log_path, sizeof(log_path), "%s/postgres.log", p->dir);
	while (now_ms() < deadline) {
		int status = 0;

		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			p->pid = 0;
			return log_says(log_path, "Address already in use") ? 2 : 1;
		}
		if (PQping(conninfo) == PQPING_OK)
			return 0;
		nap_ms(100);
	}
	return -1;
}

void
servers_pg_start(struct pg_server *p, const char *tag)
{
	char initdb[512], data[200], out[8192];
	struct passwd *pw = getpwnam("postgres");

	cr_assert_not_null(pw, "no postgres user: run scripts/install-deps.sh");
	memset(p, 0, sizeof(*p));
	make_dir(p->dir, sizeof(p->dir), tag, "pg");
	remember((void **)pg_registry, p);
	snprintf(data, sizeof(data), "%s/data", p->dir);
	cr_assert_eq(mkdir(data, 0700), 0, "mkdir %s: %s", data, strerror(errno));
	cr_assert_eq(chown(data, pw->pw_uid, pw->pw_gid), 0, "chown %s: %s", data, strerror(errno));
	{
		const char *argv[] = {"/usr/sbin/runuser",
		                      "-u",
		                      "postgres",
		                      "--",
		                      "/usr/bin/env",
		                      "-C",
		                      "/",
		                      pg_bin("initdb", initdb, sizeof(initdb)),
		                      "-D",
		                      data,
		                      "-U",
		                      "postgres",
		                      "--auth=trust",
		                      "-E",
		                      "UTF8",
		                      "--locale=C",
		                      "--no-sync",
		                      "--no-instructions",
		                      NULL};
		int rc = harness_run(argv, NULL, out, sizeof(out), 120000);

		cr_assert_eq(rc, 0, "initdb exited %d:\n%s", rc, out);
	}
	for (int attempt = 0;; attempt++) {
		int port;
		int rc;

		cr_assert_lt(attempt, START_TRIES, "PostgreSQL: no free port after %d tries",
		             START_TRIES);
		pick_ports(&port, 1);
		p->port = port;
		snprintf(p->url, sizeof(p->url), "postgresql://postgres@127.0.0.1:%d/postgres",
		         p->port);
		pg_spawn(p);
		rc = pg_wait_up(p, 60000);
		if (rc == 0)
			return;
		if (rc == 2)
			continue;
		stop_pid(p->pid, SIGQUIT, 10000);
		p->pid = 0;
		cr_assert_fail("PostgreSQL did not start (%s); log in %s/postgres.log",
		               rc == 1 ? "exited" : "60 s", p->dir);
	}
}

void
servers_pg_stop_immediate(struct pg_server *p)
{
	char pg_ctl[512], data[200], out[4096];
	const char *argv[] = {"/usr/sbin/runuser",
	                      "-u",
	                      "postgres",
	                      "--",
	                      "/usr/bin/env",
	                      "-C",
	                      "/",
	                      pg_bin("pg_ctl", pg_ctl, sizeof(pg_ctl)),
	                      "-D",
	                      data,
	                      "-m",
	                      "immediate",
	                      "-w",
	                      "-t",
	                      "30",
	                      "stop",
	                      NULL};
	int rc;

	snprintf(data, sizeof(data), "%s/data", p->dir);
	rc = harness_run(argv, NULL, out, sizeof(out), 40000);
	cr_assert_eq(rc, 0, "pg_ctl stop -m immediate exited %d:\n%s", rc, out);
	cr_assert_neq(reap(p->pid, 30000), -1, "postmaster %d still running after pg_ctl stop",
	              (int)p->pid);
	p->pid = 0;
}

void
servers_pg_restart(struct pg_server *p)
{
	int rc;

	cr_assert_eq(p->pid, 0, "PostgreSQL is still running");
	pg_spawn(p);
	rc = pg_wait_up(p, 60000);
	cr_assert_eq(rc, 0, "PostgreSQL did not come back on port %d (%s); log in %s/postgres.log",
	             p->port,
	             rc == 2   ? "port taken"
	             : rc == 1 ? "exited"
	                       : "60 s",
	             p->dir);
}

/* ---- cleanup ---- */

void
servers_cleanup(void)
{
	/* Signal all first, then wait: the servers stop in parallel. */
	for (int i = 0; i < MAX_REGISTERED; i++) {
		if (nats_registry[i] != NULL && nats_registry[i]->pid > 0)
			kill(nats_registry[i]->pid, SIGTERM);
		if (pg_registry[i] != NULL && pg_registry[i]->pid > 0)
			kill(pg_registry[i]->pid, SIGQUIT);
	}
	for (int i = 0; i < MAX_REGISTERED; i++) {
		struct nats_server *n = nats_registry[i];
		struct pg_server *p = pg_registry[i];

		if (n != NULL) {
			stop_pid(n->pid, SIGTERM, 10000);
			n->pid = 0;
			remove_tree(n->dir);
			nats_registry[i] = NULL;
		}
		if (p != NULL) {
			stop_pid(p->pid, SIGQUIT, 10000);
			p->pid = 0;
			remove_tree(p->dir);
			pg_registry[i] = NULL;
		}
	}
}
