/*
 * workers.c: the worker pool. See workers.h.
 */
#include "server/workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

/* A mutex-guarded singly linked FIFO and a condition variable. Workers take one job at a
 * time; shutdown sets stop and wakes everyone, and workers exit once the queue is empty. */

struct job {
    workers_fn fn;
    void *arg;
    struct job *next;
};

struct workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail; /* owned */
    int32_t pending;         /* queued + running */
    bool stop;
    pthread_t *threads;      /* owned, (n_threads) */
    int32_t n_threads;
};

static void *worker(void *arg)
{
    struct workers *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        struct job *j = p->head;
        if (!j) break; /* stop and nothing queued */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
        p->pending--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct workers *workers_new(int32_t n_threads)
{
    struct workers *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = xcalloc((size_t)VLM_MAX(n_threads, 1), sizeof *p->threads);
    for (int32_t i = 0; i < VLM_MAX(n_threads, 1); i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p)) break;
        p->n_threads++;
    }
    if (!p->n_threads) {
        workers_free(p);
        return NULL;
    }
    return p;
}

void workers_submit(struct workers *p, workers_fn fn, void *arg)
{
    struct job *j = xmalloc(sizeof *j);
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->pending++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

int32_t workers_pending(struct workers *p)
{
    pthread_mutex_lock(&p->mu);
    int32_t n = p->pending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void workers_free(struct workers *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int32_t i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    VLM_ASSERT(!p->head);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
