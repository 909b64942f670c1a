/*
 * saga-demo-client: starts N sagas at a fixed rate over request/reply and
 * prints how many were accepted and the start-acknowledgement latency.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "codec.h"
#include "config.h"
#include "log.h"

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double
pct(const int64_t *sorted, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return n > 0 ? (double)sorted[i] / 1000.0 : 0;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	struct bus *bus = NULL;
	char err[512];
	char subject[256];
	int next = 1;
	int count = 300, rate = 200;
	const char *saga = "order";
	int64_t *lat;
	int accepted = 0, duplicate = 0, rejected = 0, failed = 0;
	int64_t t0;

	log_set_component("saga-demo-client");
	if (config_init(&cfg) != STATUS_OK ||
	    config_load_env(&cfg, err, sizeof(err)) != STATUS_OK ||
	    config_parse_args(&cfg, argc, argv, &next, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "saga-demo-client: %s\n", err);
		return 2;
	}
	if (next < argc)
		count = atoi(argv[next++]);
	if (next < argc)
		rate = atoi(argv[next++]);
	if (next < argc)
		saga = argv[next++];
	if (count <= 0 || rate <= 0) {
		fprintf(stderr,
		        "usage: saga-demo-client [--setting=value] [COUNT [RATE [SAGA]]]\n");
		return 2;
	}
	lat = calloc((size_t)count, sizeof(*lat));
	if (lat == NULL || bus_connect(&bus, &cfg, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "saga-demo-client: %s\n", err);
		return 4;
	}
	snprintf(subject, sizeof(subject), "%s.start.%s", cfg.subject_prefix, saga);
	t0 = now_us();
	for (int i = 0; i < count; i++) {
		char input[128], key[64];
		struct bytes req = {0};
		struct bus_msg *reply = NULL;
		struct start_answer a;
		int64_t due = t0 + (int64_t)i * 1000000 / rate, sent;

		while (now_us() < due) {
			struct timespec nap = {0, 200000};

			nanosleep(&nap, NULL);
		}
		snprintf(input, sizeof(input),
		         "{\"order_id\":%d,\"sku\":\"SKU-%03d\",\"qty\":%d,\"amount_cents\":%d}", i,
		         i % 97, 1 + i % 5, 1000 + 37 * i);
		snprintf(key, sizeof(key), "demo-order-%d-%lld", i, (long long)t0);
		if (codec_encode_start_request(saga, 0,
		                               (struct bytes){(uint8_t *)input, strlen(input)}, key,
		                               NULL, &req) != STATUS_OK)
			return 1;
		sent = now_us();
		if (bus_request(bus, subject, NULL, 0, req.data, req.len, 5000, &reply, err,
		                sizeof(err)) != STATUS_OK ||
		    codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
		                              sizeof(err)) != STATUS_OK) {
			failed++;
		} else {
			lat[accepted + duplicate + rejected] = now_us() - sent;
			accepted += a.status == START_ACCEPTED;
			duplicate += a.status == START_DUPLICATE;
			rejected += a.status == START_REJECTED;
		}
		bus_msg_free(reply);
		free(req.data);
	}
	{
		int n = accepted + duplicate + rejected;

		qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
		printf("starts: %d sent at %d/s in %.1f s: %d accepted, %d duplicate, %d rejected, "
		       "%d unanswered\n",
		       count, rate, (double)(now_us() - t0) / 1e6, accepted, duplicate, rejected,
		       failed);
		printf("start-ack latency: p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		       pct(lat, n, 0.50), pct(lat, n, 0.95), pct(lat, n, 0.99),
		       n > 0 ? (double)lat[n - 1] / 1000.0 : 0);
	}
	free(lat);
	bus_close(bus);
	config_free(&cfg);
	return failed > 0 ? 1 : 0;
}
