/*
 * sched: queues, the token budget, preemption, encoder-cache accounting, and the update
 * that turns sampled tokens into stream events. See sched.h for the contract.
 */
#include "scheduler/sched.h"

#include <stdlib.h>
#include <string.h>

#include "scheduler/constrain.h"
#include "scheduler/kv_cache.h"

/* ==== State ====
 * Everything is sized in sched_new; a step allocates nothing except a request's event
 * buffer growing (amortized, request.c). */

/* A resident encoder-cache item: rows [row0, row0 + n_tokens) of the engine's arena. */
struct enc_entry {
    uint64_t hash;
    int32_t n_tokens;
    int32_t row0;        /* placed here (enc_place); the engine writes where told */
    int32_t refs;        /* requests holding it (scheduled span not yet computed) */
    uint64_t last_use;   /* LRU clock among refs == 0 entries */
    uint32_t pin;        /* == sched.enc_stamp: hit by the range being planned */
    bool evicting;       /* tentatively evicted while a range is planned */
};

/* An occupied arena range, for placement. */
struct enc_occ {
    int32_t row0, n;
};

enum {
    CTR_RUNNING, CTR_WAITING, CTR_PREEMPTED, CTR_KV_USED, CTR_KV_CACHED, CTR_PREFIX_HIT,
    CTR_PREFIX_QUERIED, CTR_ENC_HIT, CTR_ENC_MISS, CTR_ENC_USED, CTR_TOK_IN, CTR_TOK_OUT,
    CTR_STEPS, CTR_FINISHED, /* + 7 slots indexed by state */
    CTR_N = CTR_FINISHED + 7
};

struct sched {
    struct sched_config cfg;
    struct kv_pool pool;

    struct request **running;        /* (max_num_seqs) admission order, oldest first */
    int32_t n_running;
    struct request *wait_head, *wait_tail;  /* FCFS; preempted ones go to the head */
    int32_t n_waiting;

    struct enc_entry *enc;           /* (cap_enc) resident items */
    int32_t n_enc;
    int32_t cap_enc;                 /* max resident items: one per row at most */
    int32_t enc_used;                /* rows resident, not counting tentative evictions */
    uint64_t enc_clock;
    uint32_t enc_stamp;
    struct enc_occ *occ;             /* (cap_enc + 1) placement scratch */
    const struct mm_item **plan;     /* (cap_enc) items one range must encode */
    int32_t *plan_row;               /* (cap_enc) their rows */

    /* the current step (valid until the next sched_schedule) */
    struct batch_seq *seqs;          /* (max_num_seqs) */
    struct request **seq_req;        /* (max_num_seqs) the request behind each seq */
    const struct mm_item **encode;   /* (cap_enc) */
    int32_t *encode_row;             /* (cap_enc) */
    struct batch b;
    int32_t *hits;                   /* (n_blocks) prefix lookup scratch */
    bool in_step;                    /* between sched_schedule and sched_update */
    bool enc_blocked;                /* this step, an earlier request waits for encoder room */
    int32_t prefill_chunk;           /* most tokens per request per step while it prefills */
    struct mask_helper *mh;          /* structured outputs' helper thread (constrain.h);
                                      * started with the first constrained request */
    bool mh_tried;
    bool no_hold;                    /* this schedule: sample even where a cold mask is due */
    bool held;                       /* this schedule held back a sequence for its mask */

    _Atomic int64_t ctr[CTR_N];
};

static inline void ctr_add(struct sched *s, int i, int64_t v)
{
    atomic_store_explicit(&s->ctr[i], atomic_load_explicit(&s->ctr[i], memory_order_relaxed) + v,
                          memory_order_relaxed);
}
static inline void ctr_set(struct sched *s, int i, int64_t v)
{
    atomic_store_explicit(&s->ctr[i], v, memory_order_relaxed);
}

/* ==== Configuration and lifetime ==== */

struct sched *sched_new(const struct sched_config *cfg, struct vlm_err *err)
{
    const struct sched_config *c = cfg;
    if (c->block_size < 1 || c->n_blocks < 2 || c->max_num_seqs < 1 ||
        c->max_num_batched_tokens < 1 || c->max_model_len < 2 || c->encoder_cache_tokens < 0 ||
        c->max_waiting < 0) {
        vlm_err_set(err, VLM_EINVAL, 500,
                    "scheduler: bad config (block_size %d, n_blocks %d, max_num_seqs %d, "
                    "max_num_batched_tokens %d, max_model_len %d)",
                    c->block_size, c->n_blocks, c->max_num_seqs, c->max_num_batched_tokens,
                    c->max_model_len);
        return NULL;
    }
    if (c->max_mm_item_tokens > c->encoder_cache_tokens) {
        vlm_err_set(err, VLM_EINVAL, 500,
                    "scheduler: encoder cache budget (%d tokens) is smaller than one image "
                    "(up to %d tokens)", c->encoder_cache_tokens, c->max_mm_item_tokens);
        return NULL;
    }
    struct sched *s = xcalloc(1, sizeof *s);
    s->cfg = *c;
    s->prefill_chunk = c->max_num_batched_tokens;
    int rc = kv_pool_init(&s->pool, c->n_blocks, c->block_size, c->enable_prefix_caching);
    VLM_ASSERT(rc == 0);
    int32_t ns = c->max_num_seqs;
    s->running = xcalloc((size_t)ns, sizeof *s->running);
    s->cap_enc = VLM_MAX(c->encoder_cache_tokens, 1);
    s->enc = xcalloc((size_t)s->cap_enc, sizeof *s->enc);
    s->occ = xcalloc((size_t)s->cap_enc + 1, sizeof *s->occ);
    s->plan = xcalloc((size_t)s->cap_enc, sizeof *s->plan);
    s->plan_row = xcalloc((size_t)s->cap_enc, sizeof *s->plan_row);
    s->seqs = xcalloc((size_t)ns, sizeof *s->seqs);
    s->seq_req = xcalloc((size_t)ns, sizeof *s->seq_req);
    s->encode = xcalloc((size_t)s->cap_enc, sizeof *s->encode);
    s->encode_row = xcalloc((size_t)s->cap_enc, sizeof *s->encode_row);
    s->hits = xcalloc((size_t)c->n_blocks, sizeof *s->hits);
    ctr_set(s, CTR_KV_USED, 0);
    return s;
}

int sched_validate(const struct sched_config *cfg, struct request *r, struct vlm_err *err)
{
    VLM_ASSERT(r && !r->tokens);
    int64_t kv_tokens = (int64_t)(cfg->n_blocks - 1) * cfg->block_size;
    if (r->n_prompt < 1)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages", "the prompt is empty");
    if (r->n_prompt + 1 > cfg->max_model_len)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "this model's maximum context length is %d tokens; the prompt "
                             "has %d tokens, leaving no room for output",
                             cfg->max_model_len, r->n_prompt);
    if (r->n_prompt + 1 > kv_tokens)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "the prompt has %d tokens; the KV cache holds at most %lld",
                             r->n_prompt, (long long)kv_tokens);
    if (r->params.max_tokens < 1)
        return vlm_err_param(err, VLM_EINVAL, 400, "max_tokens", "max_tokens must be >= 1");
    for (int32_t i = 0; i < r->n_mm; i++)
        if (r->mm[i].item->n_tokens > cfg->encoder_cache_tokens)
            return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                                 "an image needs %d tokens; the encoder cache holds %d",
                                 r->mm[i].item->n_tokens, cfg->encoder_cache_tokens);
    int64_t cap = (int64_t)r->n_prompt + r->params.max_tokens;
    cap = VLM_MIN(cap, (int64_t)cfg->max_model_len);
    cap = VLM_MIN(cap, kv_tokens);
    r->cap_tokens = (int32_t)cap;
    r->tokens = trymalloc((size_t)cap * sizeof *r->tokens);
    r->mm_row = trymalloc((size_t)VLM_MAX(r->n_mm, 1) * sizeof *r->mm_row);
    if (!r->tokens || !r->mm_row || kv_cache_req_init(cfg->block_size, r) != 0)
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for the request");
    memcpy(r->tokens, r->prompt, (size_t)r->n_prompt * sizeof *r->tokens);
    for (int32_t k = 0; k < r->n_mm; k++) r->mm_row[k] = -1;
    r->n_tokens = r->n_prompt;
    r->n_computed = 0;
    r->state = REQ_WAITING;
    return 0;
}

/* ==== Queues ==== */

static void wait_push_back(struct sched *s, struct request *r)
{
    r->q_next = NULL;
    r->q_prev = s->wait_tail;
    if (s->wait_tail) s->wait_tail->q_next = r;
    else s->wait_head = r;
    s->wait_tail = r;
    s->n_waiting++;
}

static void wait_push_front(struct sched *s, struct request *r)
{
    r->q_prev = NULL;
    r->q_next = s->wait_head;
    if (s->wait_head) s->wait_head->q_prev = r;
    else s->wait_tail = r;
    s->wait_head = r;
    s->n_waiting++;
}

static void wait_unlink(struct sched *s, struct request *r)
{
    if (r->q_prev) r->q_prev->q_next = r->q_next;
    else s->wait_head = r->q_next;
    if (r->q_next) r->q_next->q_prev = r->q_prev;
    else s->wait_tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
    s->n_waiting--;
}

static void running_push(struct sched *s, struct request *r)
{
    VLM_ASSERT(s->n_running < s->cfg.max_num_seqs);
    r->run_idx = s->n_running;
    s->running[s->n_running++] = r;
    r->state = REQ_RUNNING;
}

/* Removes r from the running array, keeping the order of the others. */
static void running_remove(struct sched *s, struct request *r)
{
    int32_t i = r->run_idx;
    VLM_ASSERT(i >= 0 && i < s->n_running && s->running[i] == r);
    for (; i + 1 < s->n_running; i++) {
        s->running[i] = s->running[i + 1];
        s->running[i]->run_idx = i;
    }
    s->n_running--;
    r->run_idx = -1;
}

static void update_gauges(struct sched *s)
{
    ctr_set(s, CTR_RUNNING, s->n_running);
    ctr_set(s, CTR_WAITING, s->n_waiting);
    ctr_set(s, CTR_KV_USED, kv_pool_capacity(&s->pool) - s->pool.n_free);
    ctr_set(s, CTR_KV_CACHED, s->pool.n_cached);
    ctr_set(s, CTR_ENC_USED, s->enc_used);
}

/* ==== Encoder cache ====
 * The engine keeps projector rows in an arena of encoder_cache_tokens rows and writes each
 * item where the batch says (batch.encode_row); the scheduler owns the placement, as it owns
 * the KV block ids. An item needs a contiguous run of rows, so free rows are not enough: a
 * range's new items are placed first fit (enc_place), evicting unreferenced items in LRU
 * order until they fit. Evicting is bookkeeping only: the rows are simply reused.
 *
 * enc_schedule() plans (commit false: nothing changes) or commits (references, placement,
 * the step's encode list) one request's range; a plan that fits commits the same way.
 *
 * Starvation: an item can only be placed once the items pinned around it are released,
 * and a stream of younger requests hitting or encoding items could keep that from ever
 * happening. So once a request in this step's order (oldest running first, then the
 * waiting head) has to wait for room, the requests after it take no new references this
 * step: they run only up to their next span they do not hold yet. */

static struct enc_entry *enc_find(struct sched *s, uint64_t hash)
{
    for (int32_t i = 0; i < s->n_enc; i++)
        if (s->enc[i].hash == hash && !s->enc[i].evicting) return &s->enc[i];
    return NULL;
}

static void enc_remove(struct sched *s, struct enc_entry *e)
{
    s->enc_used -= e->evicting ? 0 : e->n_tokens;
    *e = s->enc[--s->n_enc];
}

static void enc_unref(struct sched *s, struct request *r, int32_t k)
{
    struct enc_entry *e = enc_find(s, r->mm[k].item->hash);
    VLM_ASSERT(e && e->refs > 0 && r->mm_row[k] == e->row0);
    r->mm_row[k] = -1;
    if (--e->refs == 0) e->last_use = ++s->enc_clock;
}

/* Places items[0..n) first fit among the resident items not being evicted: rows[j] gets
 * item j's first row. Returns false if one does not fit. */
static bool enc_place(struct sched *s, const struct mm_item *const *items, int32_t n,
                      int32_t *rows)
{
    int32_t n_occ = 0;
    for (int32_t i = 0; i < s->n_enc; i++) {
        const struct enc_entry *e = &s->enc[i];
        if (e->evicting) continue;
        int32_t j = n_occ++; /* insertion sort by row0 */
        while (j > 0 && s->occ[j - 1].row0 > e->row0) {
            s->occ[j] = s->occ[j - 1];
            j--;
        }
        s->occ[j] = (struct enc_occ){e->row0, e->n_tokens};
    }
    for (int32_t t = 0; t < n; t++) {
        int32_t start = 0, at = -1;
        for (int32_t i = 0; i <= n_occ; i++) {
            int32_t end = i < n_occ ? s->occ[i].row0 : s->cfg.encoder_cache_tokens;
            if (end - start >= items[t]->n_tokens) {
                at = i;
                break;
            }
            if (i < n_occ) start = s->occ[i].row0 + s->occ[i].n;
        }
        if (at < 0) return false;
        memmove(&s->occ[at + 1], &s->occ[at], (size_t)(n_occ - at) * sizeof *s->occ);
        s->occ[at] = (struct enc_occ){start, items[t]->n_tokens};
        n_occ++;
        rows[t] = start;
    }
    return true;
}

/* Whether the items r needs for tokens [pos, pos + n_new) are resident or can be placed
 * (evicting unreferenced items, LRU first). *first_new gets the offset of the first span
 * that would need a new item (-1 if none) and *first_new_end its end. With commit (the
 * range must fit), evicts, places, takes the references and extends this step's encode
 * list. */
static bool enc_try(struct sched *s, struct request *r, int32_t pos, int32_t n_new, bool commit,
                    int32_t *first_new_out, int32_t *first_new_end)
{
    uint32_t stamp = ++s->enc_stamp;
    int32_t n_items = 0, need = 0, first_new = -1, n_spans = 0;
    *first_new_end = -1;
    bool ok = true;
    for (int32_t k = r->mm_done; k < r->n_mm; k++) {
        const struct mm_span *sp = &r->mm[k];
        if (sp->offset >= pos + n_new) break;
        if (sp->offset + sp->item->n_tokens <= pos || r->mm_row[k] >= 0) continue;
        if (s->enc_blocked && !commit) { /* no new references behind a waiting request */
            first_new = sp->offset;
            *first_new_end = sp->offset + sp->item->n_tokens;
            ok = false;
            break;
        }
        n_spans++;
        struct enc_entry *e = enc_find(s, sp->item->hash);
        if (e) {
            e->pin = stamp;
            continue;
        }
        bool dup = false;
        for (int32_t j = 0; j < n_items && !dup; j++) dup = s->plan[j]->hash == sp->item->hash;
        if (dup) continue;
        if (first_new < 0) {
            first_new = sp->offset;
            *first_new_end = sp->offset + sp->item->n_tokens;
        }
        if (n_items == s->cap_enc) { /* more items than rows: they cannot all fit */
            ok = false;
            break;
        }
        s->plan[n_items++] = sp->item;
        need += sp->item->n_tokens;
    }
    while (ok && n_items > 0) {
        if (s->enc_used + need <= s->cfg.encoder_cache_tokens &&
            enc_place(s, s->plan, n_items, s->plan_row))
            break;
        struct enc_entry *victim = NULL;
        for (int32_t i = 0; i < s->n_enc; i++) {
            struct enc_entry *e = &s->enc[i];
            if (e->refs == 0 && !e->evicting && e->pin != stamp &&
                (!victim || e->last_use < victim->last_use))
                victim = e;
        }
        if (!victim) {
            ok = false;
            break;
        }
        victim->evicting = true;
        s->enc_used -= victim->n_tokens;
    }
    if (!ok || !commit) {
        for (int32_t i = 0; i < s->n_enc; i++)
            if (s->enc[i].evicting) {
                s->enc[i].evicting = false;
                s->enc_used += s->enc[i].n_tokens;
            }
        *first_new_out = first_new;
        return ok;
    }
    for (int32_t i = s->n_enc - 1; i >= 0; i--)
        if (s->enc[i].evicting) enc_remove(s, &s->enc[i]);
    for (int32_t j = 0; j < n_items; j++) {
        VLM_ASSERT(s->n_enc < s->cap_enc && s->b.n_encode < s->cap_enc);
        s->enc[s->n_enc++] = (struct enc_entry){.hash = s->plan[j]->hash,
                                                .n_tokens = s->plan[j]->n_tokens,
                                                .row0 = s->plan_row[j]};
        s->enc_used += s->plan[j]->n_tokens;
        s->encode_row[s->b.n_encode] = s->plan_row[j];
        s->encode[s->b.n_encode++] = s->plan[j];
    }
    for (int32_t k = r->mm_done; k < r->n_mm; k++) {
        const struct mm_span *sp = &r->mm[k];
        if (sp->offset >= pos + n_new) break;
        if (sp->offset + sp->item->n_tokens <= pos || r->mm_row[k] >= 0) continue;
        struct enc_entry *e = enc_find(s, sp->item->hash);
        VLM_ASSERT(e);
        e->refs++;
        r->mm_row[k] = e->row0;
    }
    ctr_add(s, CTR_ENC_MISS, n_items);
    ctr_add(s, CTR_ENC_HIT, n_spans - n_items);
    *first_new_out = first_new;
    return true;
}

/* How many of the n_new tokens of r from pos can run (commit false), or take the references
 * for exactly that many (commit true). When the whole range does not fit, the range up to
 * the end of its first new item is tried: the later items the request already needs would
 * otherwise pin rows that item may need, and the request would wait on itself forever. If
 * that does not fit either, the range stops before the item and the request waits for room
 * (and the requests after it in this step take no new references). */
static int32_t enc_schedule(struct sched *s, struct request *r, int32_t pos, int32_t n_new,
                            bool commit)
{
    int32_t fn, fn_end;
    if (commit) {
        bool ok = enc_try(s, r, pos, n_new, true, &fn, &fn_end);
        VLM_ASSERT(ok);
        return n_new;
    }
    if (enc_try(s, r, pos, n_new, false, &fn, &fn_end)) return n_new;
    if (!s->enc_blocked && fn >= pos) {
        int32_t n_first = VLM_MIN(n_new, fn_end - pos);
        if (n_first < n_new && enc_try(s, r, pos, n_first, false, &fn, &fn_end)) return n_first;
    }
    s->enc_blocked = true;
    return VLM_MAX(fn - pos, 0);
}

/* Releases the items whose spans r has computed past, and advances r->mm_done. */
static void enc_release_done(struct sched *s, struct request *r)
{
    while (r->mm_done < r->n_mm &&
           r->mm[r->mm_done].offset + r->mm[r->mm_done].item->n_tokens <= r->n_computed) {
        if (r->mm_row[r->mm_done] >= 0) enc_unref(s, r, r->mm_done);
        r->mm_done++;
    }
}

static void enc_release_all(struct sched *s, struct request *r)
{
    for (int32_t k = r->mm_done; k < r->n_mm; k++)
        if (r->mm_row[k] >= 0) enc_unref(s, r, k);
    r->mm_done = 0;
}

/* ==== Admission, preemption, finishing ==== */

void sched_add(struct sched *s, struct request *r)
{
    VLM_ASSERT(r->tokens && r->state == REQ_WAITING && r->run_idx < 0);
    wait_push_back(s, r);
    ctr_set(s, CTR_WAITING, s->n_waiting);
    if (r->grammar) {
        if (!s->mh_tried) s->mh = mask_helper_new(VLM_MAX(s->cfg.mask_threads, 1));
        s->mh_tried = true;
        constrain_start(s->mh, r);
    }
}

int32_t sched_n_live(const struct sched *s) { return s->n_running + s->n_waiting; }

/* Recompute later: free everything, back to the front of the waiting queue. */
static void preempt(struct sched *s, struct request *r)
{
    running_remove(s, r);
    kv_cache_free(&s->pool, r);
    enc_release_all(s, r);
    r->n_computed = 0;
    r->state = REQ_PREEMPTED;
    r->n_preempted++;
    wait_push_front(s, r);
    ctr_add(s, CTR_PREEMPTED, 1);
    log_debug("req=%llu preempted (%d tokens, %d free blocks)", (unsigned long long)r->id,
              r->n_tokens, s->pool.n_free);
}

/* Releases r's resources and finishes its stream; r stays in whatever queue it is in (the
 * caller removes it, notifies, and drops the scheduler's reference). */
static void finish(struct sched *s, struct request *r, int state)
{
    VLM_ASSERT(req_state_finished(state) && !req_state_finished(r->state));
    constrain_stop(s->mh, r);
    kv_cache_free(&s->pool, r);
    enc_release_all(s, r);
    r->state = state;
    struct req_usage u = {.prompt_tokens = r->n_prompt,
                          .completion_tokens = r->n_tokens - r->n_prompt,
                          .cached_tokens = VLM_MAX(r->n_cached_first, 0)};
    req_stream_finish(r, state, &u);
    ctr_add(s, CTR_FINISHED + state, 1);
}

/* Tells the HTTP side, then drops the scheduler's reference (r may be freed). */
static void notify_and_drop(struct request *r)
{
    if (r->notify) r->notify(r, r->notify_user);
    req_release(r);
}

bool sched_abort_id(struct sched *s, uint64_t id, int why)
{
    VLM_ASSERT(!s->in_step && req_state_finished(why));
    struct request *r = NULL;
    for (int32_t i = 0; i < s->n_running && !r; i++)
        if (s->running[i]->id == id) r = s->running[i];
    if (r) {
        finish(s, r, why);
        running_remove(s, r);
    } else {
        for (struct request *w = s->wait_head; w && !r; w = w->q_next)
            if (w->id == id) r = w;
        if (!r) return false;
        finish(s, r, why);
        wait_unlink(s, r);
    }
    update_gauges(s);
    notify_and_drop(r);
    return true;
}

void sched_free(struct sched *s)
{
    if (!s) return;
    while (s->n_running) sched_abort_id(s, s->running[s->n_running - 1]->id, REQ_FINISHED_ABORT);
    while (s->wait_head) sched_abort_id(s, s->wait_head->id, REQ_FINISHED_ABORT);
    mask_helper_free(s->mh);
    kv_pool_destroy(&s->pool);
    free(s->running);
    free(s->enc);
    free(s->occ);
    free(s->plan);
    free(s->plan_row);
    free(s->seqs);
    free(s->seq_req);
    free(s->encode);
    free(s->encode_row);
    free(s->hits);
    free(s);
}

/* ==== Schedule ====
 * vLLM order: running requests first, oldest first, each as many tokens as it still needs
 * within the budget; on a block shortage the newest running request is preempted (possibly
 * the one being scheduled). Then, only if nobody was preempted, waiting requests in FCFS
 * order until one does not fit (no skipping ahead: the head of the queue never starves). */

static void join_masks(void *arg);

static void add_seq(struct sched *s, struct request *r, int32_t n_new)
{
    struct batch_seq *q = &s->seqs[s->b.n_seqs];
    s->seq_req[s->b.n_seqs++] = r;
    int32_t pos = r->n_computed, k = r->mm_done;
    while (k < r->n_mm && r->mm[k].offset + r->mm[k].item->n_tokens <= pos) k++;
    int32_t k_end = k;
    while (k_end < r->n_mm && r->mm[k_end].offset < pos + n_new) k_end++;
    *q = (struct batch_seq){
        .pos = pos,
        .n_tokens = n_new,
        .tokens = r->tokens + pos,
        .blocks = r->blocks,
        .n_blocks = r->n_blocks,
        .mm = k_end > k ? r->mm + k : NULL,
        .mm_row = k_end > k ? r->mm_row + k : NULL,
        .n_mm = k_end - k,
        .sp = pos + n_new == r->n_tokens ? &r->params.sp : NULL,
        .prompt = r->tokens,
        .n_prompt = r->n_prompt,
        .output = r->tokens + r->n_prompt,
        .n_out = r->n_tokens - r->n_prompt,
        .prompt_lp = r->params.prompt_logprobs && pos + 1 < r->n_prompt,
        .prompt_top = r->plp.n_top,
    };
    if (q->sp && r->gm && r->gm_on) s->b.masks_ready = join_masks; /* q->mask: join_masks */
}

/* Structured outputs: a step that would sample r while its mask is a cold walk still under
 * way on the helper stops one token short of it (that token waits for a later step; a
 * decode sits the step out). Returns the tokens to schedule from pos, at most n_new. A new
 * request that would be left with nothing keeps its n_new and waits for the mask at
 * sampling time instead, so that the head of the queue is not stuck. */
static int32_t hold_for_mask(struct sched *s, struct request *r, int32_t pos, int32_t n_new,
                             bool waiting)
{
    if (n_new == 0 || pos + n_new < r->n_tokens || s->no_hold || !constrain_hold(s->mh, r))
        return n_new;
    if (n_new == 1 && waiting) return n_new;
    s->held = true;
    return n_new == 1 ? 0 : enc_schedule(s, r, pos, n_new - 1, false);
}

void sched_set_prefill_chunk(struct sched *s, int32_t n)
{
    s->prefill_chunk = VLM_MAX(1, VLM_MIN(n, s->cfg.max_num_batched_tokens));
}

int32_t sched_prefill_chunk(const struct sched *s)
{
    return s->prefill_chunk;
}

/* The batch's masks_ready: joins the mask of every sequence that samples under a constraint
 * (called by the engine once the forward pass is under way; see constrain.h). */
static void join_masks(void *arg)
{
    struct sched *s = arg;
    for (int32_t i = 0; i < s->b.n_seqs; i++)
        if (s->seqs[i].sp) s->seqs[i].mask = constrain_mask(s->mh, s->seq_req[i]);
}

static int32_t schedule_once(struct sched *s);

int32_t sched_schedule(struct sched *s, struct batch *out)
{
    VLM_ASSERT(!s->in_step);
    s->no_hold = false;
    int32_t n = schedule_once(s);
    if (n == 0 && s->held) { /* nothing else can run: wait for the held masks instead */
        s->no_hold = true;
        n = schedule_once(s);
    }
    *out = s->b;
    s->in_step = n > 0;
    return n;
}

static int32_t schedule_once(struct sched *s)
{
    const int32_t bs = s->cfg.block_size;
    int32_t budget = s->cfg.max_num_batched_tokens;
    bool preempted = false;
    s->enc_blocked = false;
    s->held = false;
    s->b = (struct batch){.seqs = s->seqs, .encode = s->encode, .encode_row = s->encode_row,
                          .masks_arg = s};

    for (int32_t i = 0; i < s->n_running && budget > 0; i++) {
        struct request *r = s->running[i];
        int32_t n_new = VLM_MIN(VLM_MIN(r->n_tokens - r->n_computed, budget), s->prefill_chunk);
        VLM_ASSERT(n_new > 0);
        n_new = enc_schedule(s, r, r->n_computed, n_new, false);
        n_new = hold_for_mask(s, r, r->n_computed, n_new, false);
        if (n_new == 0) continue;
        while (kv_cache_alloc(&s->pool, r, NULL, 0, r->n_computed + n_new) == VLM_ENOSPC) {
            struct request *victim = s->running[s->n_running - 1];
            preempt(s, victim);
            preempted = true;
            if (victim == r) {
                r = NULL;
                break;
            }
        }
        if (!r) break; /* r was the newest: nobody after it is left */
        enc_schedule(s, r, r->n_computed, n_new, true);
        add_seq(s, r, n_new);
        budget -= n_new;
    }

    while (!preempted && s->wait_head && s->n_running < s->cfg.max_num_seqs && budget > 0) {
        struct request *r = s->wait_head;
        VLM_ASSERT(r->n_blocks == 0 && r->n_computed == 0);
        /* prompt logprobs need every prompt position computed (vLLM v1 skips the cache too) */
        int32_t n_hit = r->params.prompt_logprobs ? 0 : kv_cache_lookup(&s->pool, r, s->hits);
        int32_t n_cached = n_hit * bs;
        int32_t n_new = VLM_MIN(VLM_MIN(r->n_tokens - n_cached, budget), s->prefill_chunk);
        r->mm_done = 0;
        n_new = enc_schedule(s, r, n_cached, n_new, false);
        n_new = hold_for_mask(s, r, n_cached, n_new, true);
        if (n_new == 0) break;
        if (kv_cache_alloc(&s->pool, r, s->hits, n_hit, n_cached + n_new) == VLM_ENOSPC) break;
        wait_unlink(s, r);
        running_push(s, r);
        r->n_computed = n_cached;
        if (r->n_cached_first < 0) {
            r->n_cached_first = n_cached;
            ctr_add(s, CTR_PREFIX_QUERIED, r->n_tokens);
            ctr_add(s, CTR_PREFIX_HIT, n_cached);
        }
        enc_release_done(s, r); /* skips spans the prefix hit covered */
        enc_schedule(s, r, n_cached, n_new, true);
        add_seq(s, r, n_new);
        budget -= n_new;
    }

    /* The batch invariants (vLLM asserts the same at the end of schedule()). */
    int32_t total = 0;
    for (int32_t i = 0; i < s->b.n_seqs; i++) {
        const struct batch_seq *q = &s->seqs[i];
        VLM_ASSERT(q->n_tokens > 0 && q->n_blocks * bs >= q->pos + q->n_tokens);
        total += q->n_tokens;
    }
    VLM_ASSERT(total <= s->cfg.max_num_batched_tokens);
    VLM_ASSERT(s->b.n_seqs <= s->cfg.max_num_seqs && s->n_running <= s->cfg.max_num_seqs);
    update_gauges(s);
    return s->b.n_seqs;
}

/* ==== Update ==== */

/* The stop condition after token tok was appended to r, or 0 to go on. */
static int stop_state(const struct request *r, int32_t tok, bool *is_stop)
{
    const struct req_params *p = &r->params;
    *is_stop = false;
    if (!p->ignore_eos)
        for (int32_t i = 0; i < p->n_eos; i++) *is_stop |= tok == p->eos_ids[i];
    for (int32_t i = 0; i < p->n_stop; i++) *is_stop |= tok == p->stop_ids[i];
    if (*is_stop) return REQ_FINISHED_STOP;
    if (r->n_tokens >= r->cap_tokens) return REQ_FINISHED_LENGTH;
    return 0;
}

/* One prompt logprob entry into r's storage; a position already written (a recompute after
 * preemption) is left alone, since the HTTP side may be reading it. */
static void store_prompt_lp(struct request *r, const struct batch_out *out, int32_t j)
{
    struct req_prompt_lp *p = &r->plp;
    int32_t t = out->plp_pos[j], k = p->n_top;
    if (!p->lp || t != p->n_done || t >= r->n_prompt) return;
    p->lp[t] = out->plp_lp[j];
    p->rank[t] = out->plp_rank[j];
    memcpy(p->top_ids + (size_t)t * k, out->plp_top_ids + (size_t)j * VLM_MAX_TOP_LOGPROBS,
           (size_t)k * sizeof(int32_t));
    memcpy(p->top_lp + (size_t)t * k, out->plp_top_lp + (size_t)j * VLM_MAX_TOP_LOGPROBS,
           (size_t)k * sizeof(float));
    p->n_done = t + 1;
}

void sched_update(struct sched *s, const struct batch *b, const struct batch_out *out)
{
    VLM_ASSERT(s->in_step && b->n_seqs == s->b.n_seqs && b->seqs == s->seqs);
    int32_t k = 0, n_done = 0, lp = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const struct batch_seq *q = &b->seqs[i];
        struct request *r = s->seq_req[i];
        VLM_ASSERT(r->state == REQ_RUNNING && q->pos == r->n_computed);
        for (; lp < out->n_plp && out->plp_seq[lp] == i; lp++)
            store_prompt_lp(r, out, lp);
        r->n_computed += q->n_tokens;
        ctr_add(s, CTR_TOK_IN, q->n_tokens);
        enc_release_done(s, r);
        kv_cache_commit(&s->pool, r);
        if (!q->sp) continue; /* a non-final prefill chunk: nothing to tell the client */

        VLM_ASSERT(k < out->n && r->n_tokens < r->cap_tokens);
        struct req_event ev = {.token = out->token[k], .logprob = out->logprob ? out->logprob[k] : 0};
        if (r->params.sp.logprobs > 0 && out->top_ids && out->top_lp) {
            ev.n_top = VLM_MIN(r->params.sp.logprobs, VLM_MAX_TOP_LOGPROBS);
            memcpy(ev.top_ids, out->top_ids + (size_t)k * VLM_MAX_TOP_LOGPROBS,
                   (size_t)ev.n_top * sizeof(int32_t));
            memcpy(ev.top_lp, out->top_lp + (size_t)k * VLM_MAX_TOP_LOGPROBS,
                   (size_t)ev.n_top * sizeof(float));
        }
        k++;
        r->tokens[r->n_tokens++] = ev.token;
        ctr_add(s, CTR_TOK_OUT, 1);
        int st = stop_state(r, ev.token, &ev.is_stop);
        if (!st && r->grammar) st = constrain_advance(s->mh, r, ev.token);
        req_stream_push(r, &ev);
        if (st) {
            finish(s, r, st);
            n_done++;
        }
        if (r->notify) r->notify(r, r->notify_user);
    }
    VLM_ASSERT(k == out->n);
    if (n_done) {
        /* Drop the finished ones from the running array in one pass, keeping order. */
        int32_t j = 0;
        for (int32_t i = 0; i < s->n_running; i++) {
            struct request *r = s->running[i];
            if (req_state_finished(r->state)) {
                r->run_idx = -1;
                continue;
            }
            r->run_idx = j;
            s->running[j++] = r;
        }
        s->n_running = j;
        for (int32_t i = 0; i < b->n_seqs; i++)
            if (req_state_finished(s->seq_req[i]->state)) req_release(s->seq_req[i]);
    }
    s->in_step = false;
    ctr_add(s, CTR_STEPS, 1);
    update_gauges(s);
}

void sched_fail(struct sched *s, const struct batch *b)
{
    VLM_ASSERT(s->in_step && b->seqs == s->seqs);
    s->in_step = false;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        struct request *r = s->seq_req[i];
        if (req_state_finished(r->state)) continue;
        finish(s, r, REQ_FINISHED_ERROR);
        running_remove(s, r);
        notify_and_drop(r);
    }
    /* The engine may have written any part of the step's new items; only the step's
     * requests (finished now) held them, so they are forgotten. Other rows are untouched. */
    for (int32_t i = 0; i < b->n_encode; i++) {
        struct enc_entry *e = enc_find(s, b->encode[i]->hash);
        VLM_ASSERT(e && e->refs == 0);
        enc_remove(s, e);
    }
    update_gauges(s);
}

/* ==== Stats and checks ==== */

void sched_get_stats_raw(const struct sched *s, struct sched_stats *o)
{
    struct sched *m = (struct sched *)s; /* atomics: loads only */
#define LD(i) atomic_load_explicit(&m->ctr[i], memory_order_relaxed)
    memset(o, 0, sizeof *o);
    o->running = LD(CTR_RUNNING);
    o->waiting = LD(CTR_WAITING);
    o->preempted_total = LD(CTR_PREEMPTED);
    o->kv_blocks_used = LD(CTR_KV_USED);
    o->kv_blocks_total = s->cfg.n_blocks - 1;
    o->kv_blocks_cached = LD(CTR_KV_CACHED);
    o->prefix_hit_tokens = LD(CTR_PREFIX_HIT);
    o->prefix_queried_tokens = LD(CTR_PREFIX_QUERIED);
    o->encoder_hits = LD(CTR_ENC_HIT);
    o->encoder_misses = LD(CTR_ENC_MISS);
    o->encoder_tokens_used = LD(CTR_ENC_USED);
    o->tokens_in = LD(CTR_TOK_IN);
    o->tokens_out = LD(CTR_TOK_OUT);
    o->steps = LD(CTR_STEPS);
    for (int i = 0; i < 7; i++) o->finished[i] = LD(CTR_FINISHED + i);
#undef LD
}

void sched_check(const struct sched *s)
{
    const struct kv_pool *p = &s->pool;
    kv_pool_check(p);
    int32_t *refs = xcalloc((size_t)p->n_blocks, sizeof *refs);
    int32_t *enc_refs = xcalloc((size_t)VLM_MAX(s->n_enc, 1), sizeof *enc_refs);
    for (int32_t i = 0; i < s->n_running; i++) {
        const struct request *r = s->running[i];
        VLM_ASSERT(r->state == REQ_RUNNING && r->run_idx == i);
        VLM_ASSERT(r->n_computed < r->n_tokens && r->n_tokens <= r->cap_tokens);
        VLM_ASSERT(r->n_blocks * p->block_size >= r->n_computed);
        VLM_ASSERT(r->n_blocks <= kv_blocks_for(p, r->n_tokens));
        for (int32_t j = 0; j < r->n_blocks; j++) {
            VLM_ASSERT(r->blocks[j] > 0 && r->blocks[j] < p->n_blocks);
            refs[r->blocks[j]]++;
        }
        for (int32_t k = 0; k < r->n_mm; k++) {
            if (r->mm_row[k] < 0) continue;
            VLM_ASSERT(k >= r->mm_done);
            int32_t e = -1;
            for (int32_t j = 0; j < s->n_enc; j++)
                if (s->enc[j].hash == r->mm[k].item->hash) e = j;
            VLM_ASSERT(e >= 0 && s->enc[e].row0 == r->mm_row[k]);
            enc_refs[e]++;
        }
    }
    int32_t n_wait = 0;
    for (const struct request *w = s->wait_head; w; w = w->q_next) {
        VLM_ASSERT(w->n_blocks == 0 && w->run_idx < 0 && !req_state_finished(w->state));
        for (int32_t k = 0; k < w->n_mm; k++) VLM_ASSERT(w->mm_row[k] < 0);
        n_wait++;
    }
    VLM_ASSERT(n_wait == s->n_waiting);
    for (int32_t id = 1; id < p->n_blocks; id++) VLM_ASSERT(refs[id] == p->b[id].ref);
    int32_t used = 0;
    VLM_ASSERT(s->n_enc <= s->cap_enc);
    for (int32_t j = 0; j < s->n_enc; j++) {
        const struct enc_entry *e = &s->enc[j];
        VLM_ASSERT(enc_refs[j] == e->refs && !e->evicting);
        VLM_ASSERT(e->row0 >= 0 && e->row0 + e->n_tokens <= s->cfg.encoder_cache_tokens);
        for (int32_t k = 0; k < j; k++) /* disjoint rows */
            VLM_ASSERT(e->row0 >= s->enc[k].row0 + s->enc[k].n_tokens ||
                       s->enc[k].row0 >= e->row0 + e->n_tokens);
        used += e->n_tokens;
    }
    VLM_ASSERT(used == s->enc_used);
    free(refs);
    free(enc_refs);
}
