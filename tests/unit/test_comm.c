/* comm_local: collectives between threads give the expected, rank-identical results. */
#include "engine/comm.h"
#include "test.h"

#include <pthread.h>
#include <stdlib.h>

#define N 1000
#define MAXR 4

struct rank_arg {
    struct comm *c;
    float red[N];
    float gat[N * MAXR];
    float bc[16];
};

static void *rank_main(void *p)
{
    struct rank_arg *a = p;
    struct comm *c = a->c;
    for (int i = 0; i < N; i++) a->red[i] = (float)((i * 7 + c->rank * 13) % 29) * 0.125f + c->rank;
    for (int it = 0; it < 50; it++) { /* repeat: catches races between consecutive calls */
        float tmp[N];
        memcpy(tmp, a->red, sizeof tmp);
        c->ops->all_reduce_sum(c->ctx, tmp, N, DT_F32);
        if (it == 49) memcpy(a->red, tmp, sizeof tmp);
    }
    float send[N];
    for (int i = 0; i < N; i++) send[i] = (float)(c->rank * N + i);
    c->ops->all_gather(c->ctx, a->gat, send, N, DT_F32);
    for (int i = 0; i < 16; i++) a->bc[i] = c->rank == 1 % c->size ? (float)i * 3 : -1;
    c->ops->broadcast(c->ctx, a->bc, sizeof a->bc, 1 % c->size);
    c->ops->barrier(c->ctx);
    return NULL;
}

int main(void)
{
    for (int size = 1; size <= MAXR; size++) {
        char name[64];
        snprintf(name, sizeof name, "local collectives, %d ranks", size);
        TEST(name) {
            struct comm comms[MAXR];
            CHECK_EQ(comm_local_create(comms, size, N, NULL), 0);
            struct rank_arg *args = calloc(size, sizeof *args);
            pthread_t th[MAXR];
            for (int r = 0; r < size; r++) {
                args[r].c = &comms[r];
                pthread_create(&th[r], NULL, rank_main, &args[r]);
            }
            for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
            for (int i = 0; i < N; i++) {
                float want = 0;
                for (int r = 0; r < size; r++) want += (float)((i * 7 + r * 13) % 29) * 0.125f + r;
                CHECK_NEAR(args[0].red[i], want, 1e-3);
                for (int r = 1; r < size; r++) CHECK(args[r].red[i] == args[0].red[i]);
            }
            for (int r = 0; r < size; r++)
                for (int i = 0; i < N * size; i++) CHECK(args[r].gat[i] == (float)i);
            for (int r = 0; r < size; r++)
                for (int i = 0; i < 16; i++) CHECK(args[r].bc[i] == (float)i * 3);
            for (int r = 0; r < size; r++) comm_destroy(&comms[r]);
            free(args);
        }
    }
    TEST("size 0 is refused") {
        struct comm c[1];
        struct vlm_err err = {0};
        CHECK(comm_local_create(c, 0, 1, &err) < 0 && err.msg[0]);
    }
    return test_report();
}
