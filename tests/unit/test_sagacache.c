/* Unit tests of the saga cache: copies in and out, versions, eviction, the hash table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sagacache.h"

static void
make_inst(struct saga_inst *inst, int n, int n_steps)
{
	static uint8_t input[] = {1, 2, 3, 4};

	memset(inst, 0, sizeof(*inst));
	snprintf(inst->id, sizeof(inst->id), "00000000-0000-7000-8000-%012d", n);
	snprintf(inst->correlation_id, sizeof(inst->correlation_id), "corr-%d", n);
	inst->state = SAGA_RUNNING;
	inst->seq = n + 1;
	inst->input.data = input;
	inst->input.len = sizeof(input);
	for (int i = 0; i < n_steps; i++) {
		inst->steps[i].state = STEP_RUNNING;
		inst->steps[i].attempt = (uint32_t)(i + 1);
		inst->steps[i].dirty = true;
		snprintf(inst->steps[i].last_error, sizeof(inst->steps[i].last_error), "e%d", i);
	}
}

/* Stage and commit inst as version. */
static void
put(struct sagacache *c, const struct saga_inst *inst, int n_steps, const char *version)
{
	struct sagacache_entry *e = sagacache_stage(inst, n_steps, "order", 3);

	cr_assert_not_null(e);
	cr_assert_str_eq(sagacache_entry_id(e), inst->id);
	sagacache_commit(c, e, version);
}

Test(sagacache, a_committed_saga_comes_back_as_its_own_deep_copy)
{
	struct sagacache *c;
	struct saga_inst inst, got;
	uint8_t output[] = {9, 8, 7};
	char name[SAGA_NAME_MAX + 1], version[SAGACACHE_VERSION_MAX + 1];
	uint32_t def_version = 0;

	cr_assert_eq(sagacache_new(8, &c), STATUS_OK);
	make_inst(&inst, 1, 3);
	inst.steps[1].output.data = output;
	inst.steps[1].output.len = sizeof(output);
	put(c, &inst, 3, "4711");
	/* Changing the caller's buffers afterwards does not reach the cache. */
	output[0] = 0;

	cr_assert(sagacache_has(c, inst.id));
	cr_assert(sagacache_get(c, inst.id, &got, name, &def_version, version));
	cr_assert_str_eq(got.id, inst.id);
	cr_assert_str_eq(got.correlation_id, "corr-1");
	cr_assert_eq(got.seq, 2);
	cr_assert_str_eq(name, "order");
	cr_assert_eq(def_version, 3);
	cr_assert_str_eq(version, "4711");
	cr_assert_eq(got.input.len, 4);
	cr_assert(got.input.data != inst.input.data);
	cr_assert_eq(memcmp(got.input.data, inst.input.data, 4), 0);
	cr_assert_eq(got.steps[1].output.len, 3);
	cr_assert_eq(got.steps[1].output.data[0], 9);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(got.steps[i].attempt, (uint32_t)(i + 1));
		cr_assert_not(got.steps[i].dirty, "step %d comes back clean", i);
	}
	cr_assert_str_eq(got.steps[2].last_error, "e2");
	/* Steps past the definition's are not kept: zero. */
	cr_assert_eq(got.steps[3].state, 0);
	saga_inst_release(&got);

	/* A second get is a second copy. */
	cr_assert(sagacache_get(c, inst.id, &got, name, &def_version, version));
	cr_assert_eq(got.steps[1].output.data[0], 9);
	saga_inst_release(&got);
	sagacache_free(c);
}

Test(sagacache, a_newer_commit_replaces_the_entry_and_drop_forgets_it)
{
	struct sagacache *c;
	struct saga_inst inst, got;
	char name[SAGA_NAME_MAX + 1], version[SAGACACHE_VERSION_MAX + 1];
	uint32_t v;

	cr_assert_eq(sagacache_new(8, &c), STATUS_OK);
	make_inst(&inst, 1, 2);
	put(c, &inst, 2, "10");
	inst.seq = 7;
	put(c, &inst, 2, "11");
	cr_assert_eq(sagacache_count(c), 1);
	cr_assert(sagacache_get(c, inst.id, &got, name, &v, version));
	cr_assert_eq(got.seq, 7);
	cr_assert_str_eq(version, "11");
	saga_inst_release(&got);

	sagacache_drop(c, inst.id);
	cr_assert_not(sagacache_has(c, inst.id));
	cr_assert_not(sagacache_get(c, inst.id, &got, name, &v, version));
	cr_assert_eq(sagacache_count(c), 0);
	sagacache_drop(c, inst.id); /* twice: nothing happens */
	sagacache_free(c);
}

Test(sagacache, ended_sagas_are_not_kept)
{
	static const enum saga_state ended[] = {SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_RESOLVED};
	struct sagacache *c;
	struct saga_inst inst;

	cr_assert_eq(sagacache_new(8, &c), STATUS_OK);
	for (size_t i = 0; i < sizeof(ended) / sizeof(ended[0]); i++) {
		make_inst(&inst, (int)i, 1);
		put(c, &inst, 1, "1");
		cr_assert(sagacache_has(c, inst.id));
		/* Its last commit ended it: the older entry goes too. */
		inst.state = ended[i];
		put(c, &inst, 1, "2");
		cr_assert_not(sagacache_has(c, inst.id), "state %d", ended[i]);
	}
	/* A failed saga waits for an operator: kept. */
	make_inst(&inst, 9, 1);
	inst.state = SAGA_FAILED;
	put(c, &inst, 1, "1");
	cr_assert(sagacache_has(c, inst.id));
	sagacache_free(c);
}

Test(sagacache, the_least_recently_written_go_first)
{
	struct sagacache *c;
	struct saga_inst inst[4];

	cr_assert_eq(sagacache_new(3, &c), STATUS_OK);
	for (int i = 0; i < 4; i++)
		make_inst(&inst[i], i, 1);
	put(c, &inst[0], 1, "1");
	put(c, &inst[1], 1, "1");
	put(c, &inst[2], 1, "1");
	/* Written again, 0 is now the most recent: 1 is the oldest. */
	put(c, &inst[0], 1, "2");
	put(c, &inst[3], 1, "1");
	cr_assert_eq(sagacache_count(c), 3);
	cr_assert(sagacache_has(c, inst[0].id));
	cr_assert_not(sagacache_has(c, inst[1].id));
	cr_assert(sagacache_has(c, inst[2].id));
	cr_assert(sagacache_has(c, inst[3].id));
	sagacache_free(c);
}

Test(sagacache, a_staged_entry_never_committed_is_discarded_and_changes_nothing)
{
	struct sagacache *c;
	struct saga_inst inst;
	struct sagacache_entry *e;

	cr_assert_eq(sagacache_new(4, &c), STATUS_OK);
	make_inst(&inst, 5, 2);
	e = sagacache_stage(&inst, 2, "order", 1);
	cr_assert_not_null(e);
	sagacache_discard(e);
	cr_assert_not(sagacache_has(c, inst.id));
	cr_assert_eq(sagacache_count(c), 0);
	sagacache_free(c);
	cr_assert_eq(sagacache_new(0, &c), STATUS_INVALID);
}

/* Random commits and drops against a plain list of the ids that should be there. */
Test(sagacache, random_commits_and_drops_match_a_reference)
{
	enum { CAP = 64, IDS = 300, OPS = 20000 };
	static int order[IDS]; /* 0 = absent, else the time of its last commit */
	struct sagacache *c;
	struct saga_inst inst;
	unsigned seed = 12345;
	int clock = 0;

	cr_assert_eq(sagacache_new(CAP, &c), STATUS_OK);
	for (int op = 0; op < OPS; op++) {
		int id = (int)(rand_r(&seed) % IDS);
		int present = 0, oldest = -1;

		make_inst(&inst, id, 1);
		inst.input.len = 0;
		inst.input.data = NULL;
		if (rand_r(&seed) % 4 == 0) {
			sagacache_drop(c, inst.id);
			order[id] = 0;
		} else {
			for (int i = 0; i < IDS; i++) {
				if (order[i] > 0) {
					present++;
					if (i != id && (oldest < 0 || order[i] < order[oldest]))
						oldest = i;
				}
			}
			/* Full and id not in it: the oldest goes. */
			if (order[id] == 0 && present == CAP)
				order[oldest] = 0;
			put(c, &inst, 1, "1");
			order[id] = ++clock;
		}
		if (op % 97 == 0 || op == OPS - 1) {
			int count = 0;

			for (int i = 0; i < IDS; i++) {
				struct saga_inst probe;

				make_inst(&probe, i, 1);
				cr_assert_eq(sagacache_has(c, probe.id), order[i] > 0,
				             "op %d id %d: cache %d, reference %d", op, i,
				             sagacache_has(c, probe.id), order[i] > 0);
				count += order[i] > 0;
			}
			cr_assert_eq(sagacache_count(c), count);
		}
	}
	sagacache_free(c);
}
