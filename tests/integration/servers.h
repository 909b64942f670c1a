/* Private servers for one test: nats-server (alone or a three-node cluster) and PostgreSQL. */
#ifndef SAGAD_TEST_SERVERS_H
#define SAGAD_TEST_SERVERS_H

#include <stddef.h>
#include <sys/types.h>

#define SERVERS_CLUSTER_SIZE 3

/*
 * One nats-server with JetStream on free 127.0.0.1 ports and its own store
 * directory. Every server and cluster started here is also stopped (and its
 * directory removed) by servers_cleanup(), which runs at process exit too;
 * and each server dies with the test process (PR_SET_PDEATHSIG), so a test
 * that crashes or times out leaves no server behind. Keep the structs in
 * static storage: the cleanup list points to them. SAGAD_TEST_KEEP_LOGS
 * keeps the directories (logs, stores, data) for a look afterwards.
 */
struct nats_server {
	char name[32];    /* server_name (unique in a cluster) */
	char dir[160];    /* private directory: store, config, log */
	char url[64];     /* nats://127.0.0.1:port */
	int port;         /* client port */
	int monitor_port; /* HTTP monitoring port (/healthz, /jsz) */
	int cluster_port; /* route port of a cluster node; 0 when alone */
	pid_t pid;        /* the running process, 0 when stopped */
};

/* A private PostgreSQL cluster (initdb, trust on loopback TCP only) on a free port. */
struct pg_server {
	char dir[160]; /* private directory: data/ and postgres.log */
	char url[160]; /* postgresql://postgres@127.0.0.1:port/postgres */
	int port;      /* TCP port */
	pid_t pid;     /* the postmaster, 0 when stopped */
};

/* Start one nats-server with JetStream; waits until /healthz answers ok. Fails the test otherwise. */
void servers_nats_start(struct nats_server *n, const char *tag);

/*
 * Start a three-node JetStream cluster on loopback and wait (at most
 * wait_ms) until every node is healthy and a meta leader is elected. Writes
 * the comma-separated client URLs into urls. Returns the milliseconds the
 * election took, or -1 on timeout (the servers keep running: the caller
 * decides; servers_nats_describe() tells what each node saw).
 */
int servers_nats_cluster_start(struct nats_server nodes[SERVERS_CLUSTER_SIZE], const char *tag,
                               char *urls, size_t urlslen, int wait_ms);

/* Index of the JetStream meta leader among nodes (asked on each live node's /jsz), or -1. */
int servers_nats_meta_leader(const struct nats_server *nodes, int n_nodes);

/* Index of the live node a client subscribed to subject is connected to (its /connz), or -1. */
int servers_nats_find_subscriber(const struct nats_server *nodes, int n_nodes, const char *subject);

/* One line per node: pid and what its /jsz says about the meta cluster (for failure messages). */
void servers_nats_describe(const struct nats_server *nodes, int n_nodes, char *out, size_t outlen);

/* Send sig (SIGTERM, SIGKILL) and wait for the exit (SIGKILL after 20 s). Returns the wait status. */
int servers_nats_stop(struct nats_server *n, int sig);

/* Start a stopped server again on the same ports and store; waits until healthy (cluster: until up). */
void servers_nats_restart(struct nats_server *n);

/* initdb a private cluster and start it; waits until it accepts connections. */
void servers_pg_start(struct pg_server *p, const char *tag);

/* `pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery on the next start). */
void servers_pg_stop_immediate(struct pg_server *p);

/* Start a stopped cluster again on the same port and data; waits until it accepts connections. */
void servers_pg_restart(struct pg_server *p);

/* Stop every server started by this process and remove their directories. Safe to call twice. */
void servers_cleanup(void);

/* GET path from 127.0.0.1:port; returns the HTTP status (body in out) or -1 when unreachable. */
int servers_http_get(int port, const char *path, char *out, size_t outlen);

#endif /* SAGAD_TEST_SERVERS_H */
