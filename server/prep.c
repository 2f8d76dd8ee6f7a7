/*
 * prep.c: the prompt builder and the in-flight media budget. See prep.h.
 */
#include "server/prep.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/chat.h"
#include "server/fetch.h"
#include "server/media.h"
#include "server/video.h"

/* ==== The in-flight media budget ====
 * A counter of bytes under a mutex; requests wait on the condition variable for room, up
 * to wait_s, and give up at once when the budget is cancelled (shutdown). */

struct media_budget {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t cap, used;
    double wait_s;
    bool cancelled;
};

struct media_budget *media_budget_new(int64_t bytes, double wait_s)
{
    struct media_budget *b = xcalloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->cap = bytes;
    b->wait_s = wait_s > 0 ? wait_s : 0;
    return b;
}

void media_budget_free(struct media_budget *b)
{
    if (!b) return;
    VLM_ASSERT(b->used == 0);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void media_budget_cancel(struct media_budget *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->cancelled = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int64_t media_budget_used(struct media_budget *b)
{
    pthread_mutex_lock(&b->mu);
    int64_t u = b->used;
    pthread_mutex_unlock(&b->mu);
    return u;
}

/* Takes bytes of the budget, waiting for room. 400 when the request alone needs more than
 * the whole budget, 503 (Retry-After) when no room came in time or the server is stopping. */
static int budget_take(struct media_budget *b, int64_t bytes, struct vlm_err *err)
{
    if (!b || bytes <= 0) return 0;
    if (bytes > b->cap)
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "decoding this request's images and video frames takes %lld bytes, "
                           "over this server's limit of %lld (--max-inflight-media-bytes); send "
                           "smaller images or fewer frames",
                           (long long)bytes, (long long)b->cap);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = floor(b->wait_s);
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((b->wait_s - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    while (!b->cancelled && b->used + bytes > b->cap && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&b->cv, &b->mu, &until);
    bool ok = !b->cancelled && b->used + bytes <= b->cap;
    if (ok) b->used += bytes;
    pthread_mutex_unlock(&b->mu);
    if (!ok)
        return vlm_err_set(err, VLM_ETOOBIG, 503,
                           "the server is busy decoding other requests' media; retry later");
    return 0;
}

static void budget_give(struct media_budget *b, int64_t bytes)
{
    if (!b || bytes <= 0) return;
    pthread_mutex_lock(&b->mu);
    b->used -= bytes;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ==== Media ==== */

/* Reads a local media file named by a file:// URL or a path (relative paths are taken
 * inside the directory). Allowed only when the server names a media directory, and only
 * when the path, after realpath() (symlinks and ".." resolved), lies inside that directory.
 * The resolved path is opened with O_NOFOLLOW | O_NONBLOCK and must be a regular file (no
 * FIFOs or devices) no larger than max_bytes. *bytes is malloc'ed. */
static int local_bytes(const struct prep_ctx *c, const char *url, size_t max_bytes,
                       uint8_t **bytes, size_t *n, struct vlm_err *err)
{
    if (!c->local_media_dir || !c->local_media_dir[0])
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "local media paths are disabled (start the server with "
                           "--allow-local-media-dir DIR); use a data: or http(s) URL");
    const char *path = url;
    if (!strncasecmp(url, "file://", 7)) {
        path = url + 7;
        if (strncasecmp(path, "localhost/", 10) == 0) path += 9;
        if (path[0] != '/')
            return vlm_err_set(err, VLM_EINVAL, 400, "file:// URLs must name a local absolute path");
    }
    if (strchr(path, '%'))
        return vlm_err_set(err, VLM_EINVAL, 400, "percent-encoded local paths are not supported");
    char dir[PATH_MAX], full[PATH_MAX], real[PATH_MAX];
    if (!realpath(c->local_media_dir, dir))
        return vlm_err_set(err, VLM_EIO, 400, "the local media directory is not accessible");
    int k = path[0] == '/' ? snprintf(full, sizeof full, "%s", path)
                           : snprintf(full, sizeof full, "%s/%s", dir, path);
    if (k < 0 || (size_t)k >= sizeof full)
        return vlm_err_set(err, VLM_EINVAL, 400, "local media path too long");
    size_t dl = strlen(dir);
    if (!realpath(full, real) || strncmp(real, dir, dl) ||
        (real[dl] != '/' && !(dl == 1 && dir[0] == '/')))
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "local media path is not a file inside the allowed media directory");
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "local media path is not a file inside the allowed media directory");
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return vlm_err_set(err, VLM_ETOOBIG, 413, "local media file is over the %zu-byte limit",
                           max_bytes);
    }
    size_t want = (size_t)st.st_size, got = 0;
    uint8_t *buf = trymalloc(VLM_MAX(want, 1));
    if (!buf) {
        close(fd);
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory reading a local media file");
    }
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    *bytes = buf;
    *n = got;
    return 0;
}

/* Fetches a media URL's bytes: data: (base64), http(s) through fetch.c, or a local file
 * (local_bytes). *bytes is malloc'ed. */
static int media_bytes(const struct prep_ctx *c, const char *url, size_t max_bytes,
                       uint8_t **bytes, size_t *n, struct vlm_err *err)
{
    if (!strncasecmp(url, "data:", 5))
        return media_parse_data_url(url, strlen(url), max_bytes, bytes, n, NULL, 0, err);
    if (!strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8)) {
        struct fetch_limits fl = {.timeout_s = c->fetch_timeout,
                                  .max_bytes = VLM_MIN(c->fetch_max_bytes, (int64_t)max_bytes),
                                  .max_redirects = c->fetch_max_redirects,
                                  .allow = c->fetch_allow,
                                  .n_allow = c->n_fetch_allow,
                                  .ca_file = c->fetch_ca_file && c->fetch_ca_file[0]
                                                 ? c->fetch_ca_file
                                                 : NULL};
        return fetch_url(url, &fl, bytes, n, err);
    }
    if (!strncasecmp(url, "file://", 7) || !strstr(url, "://"))
        return local_bytes(c, url, max_bytes, bytes, n, err);
    return vlm_err_set(err, VLM_EINVAL, 400,
                       "unsupported media URL scheme (data:, http:, https:, or file: when the "
                       "server allows a local media directory)");
}

/* A video's sampling options: the part's own num_frames / fps when it gives either, else
 * the request's mm_processor_kwargs, else the server default. num_frames above the server's
 * --video-max-frames is a 400; a count derived from fps is capped at it (video.c). */
static int video_opts(const struct prep_ctx *c, const struct oai_request *q,
                      const struct oai_media_ref *m, struct video_params *vp, struct vlm_err *err)
{
    *vp = c->video;
    int32_t num = m->num_frames;
    double fps = m->fps;
    if (!num && fps <= 0) {
        num = q->num_frames;
        fps = q->fps;
    }
    if (num > vp->max_frames)
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "num_frames %d is over this server's limit of %d frames per video",
                           (int)num, (int)vp->max_frames);
    if (num > 0) vp->num_frames = num;
    if (fps > 0) vp->fps = fps;
    return 0;
}

/* A media entry's bytes, fetched and sized before anything is decoded. */
struct media_src {
    uint8_t *bytes;               /* owned */
    size_t n;
    struct video_params vparams;  /* a video's sampling options (video_opts) */
};

static void name_media_error(const struct oai_media_ref *m, int32_t idx, struct vlm_err *err)
{
    if (!err) return;
    /* name the part; media errors have no param of their own */
    snprintf(err->param, sizeof err->param, "messages.%s[%d]",
             m->kind == OAI_MEDIA_VIDEO ? "video" : "image", (int)idx);
    if (err->http_status == 0 || err->http_status == 500) err->http_status = 400;
}

/* Appends the vision inputs of one media entry to *items: one for an image (its bytes in
 * src), one per sampled frame for a video. n_images: the request's images (Valley2's tiling
 * depends on it). */
static int load_media(const struct prep_ctx *c, const struct oai_media_ref *m, const struct media_src *src, int32_t idx,
                      const struct vision_prep_params *vp, int32_t n_images,
                      struct prep_item **items, int32_t *n_items, struct vlm_err *err)
{
    bool video = m->kind == OAI_MEDIA_VIDEO;
    struct media_image im = {0};
    struct video_frames vf = {0};
    int rc = video ? video_decode(src->bytes, src->n, &src->vparams, &vf, err)
                   : media_decode_image(src->bytes, src->n, &c->media, &im, err);
    int32_t k = video ? vf.n : 1;
    if (!rc && *n_items + k > c->max_images)
        rc = vlm_err_set(err, VLM_EINVAL, 400,
                         "at most %d images and video frames per request", (int)c->max_images);
    if (!rc) *items = xrealloc(*items, sizeof **items * (size_t)(*n_items + k));
    for (int32_t f = 0; f < k && !rc; f++) {
        struct prep_item *it = &(*items)[*n_items];
        memset(it, 0, sizeof *it);
        if (c->valley2) {
            /* both towers' inputs (docs/MODEL.md, "Valley2 image preprocessing") */
            struct valley2_prep_item both;
            rc = valley2_prep_both(&im, &c->v2, vp, n_images, &both, err);
            if (!rc) it->v = both.qwen2vl, it->sig = both.siglip;
        } else {
            rc = vision_prep_image(video ? &vf.frames[f] : &im, vp, &it->v, err);
        }
        if (!rc) (*n_items)++;
    }
    media_image_free(&im);
    video_frames_free(&vf);
    if (rc) name_media_error(m, idx, err);
    return rc;
}

/* ==== Cost before work ====
 * Every media entry's bytes are fetched and its header read: an image's size, a video's
 * frame size and duration (video_probe), which give the number of frames sampled. The token
 * count follows from the size through the two resize stages (vision_prep_smart_resize), once
 * per image and once per sampled frame, and the memory from the rasters and patch rows those
 * stages make. Before any pixel is decoded, the request is refused when it has too many
 * videos, images or frames, when its media tokens pass the per-request limit or alone fill
 * the context, or when an image passes --max-image-pixels; then the decode memory is taken
 * from the server-wide budget (waiting for room, or 503). */

static int image_cost(const struct vision_prep_params *vp, int32_t w, int32_t h,
                      int32_t *tokens, int64_t *bytes, struct vlm_err *err)
{
    int32_t factor = vp->patch * vp->merge, h1, w1, h2, w2;
    int rc = vision_prep_smart_resize(h, w, factor, vp->fetch_min_pixels, vp->fetch_max_pixels,
                                      VISION_PREP_FETCH, &h1, &w1, err);
    if (!rc) rc = vision_prep_smart_resize(h1, w1, factor, vp->proc_min_pixels,
                                           vp->proc_max_pixels, VISION_PREP_PROCESSOR, &h2, &w2,
                                           err);
    if (rc) return rc;
    int64_t patches = (int64_t)(h2 / vp->patch) * (w2 / vp->patch);
    int64_t row = (int64_t)vp->temporal * 3 * vp->patch * vp->patch;
    *tokens = (int32_t)(patches / ((int64_t)vp->merge * vp->merge));
    *bytes = 3 * ((int64_t)w * h + (int64_t)w1 * h1 + (int64_t)w2 * h2) +
             patches * row * (int64_t)sizeof(float);
    return 0;
}

/* A Valley2 image's SigLIP side (docs/MODEL.md, "Valley2 image preprocessing"): its tokens and
 * the memory of its tiles and of the canvas they are cut from, from the size alone. */
static int valley2_cost(const struct prep_ctx *c, int32_t w, int32_t h, int32_t n_images,
                        int32_t *tokens, int64_t *bytes, struct vlm_err *err)
{
    struct valley2_prep_geom g;
    int rc = valley2_prep_geometry(&c->v2, w, h, n_images, &g, err);
    if (rc) return rc;
    int64_t tile = (int64_t)c->v2.tile * c->v2.tile * 3;
    *tokens = g.n_tokens;
    *bytes = g.n_tiles * tile * (int64_t)(sizeof(float) + 1) + 3 * (int64_t)g.res_w * g.res_h;
    return 0;
}

static int media_cost(const struct prep_ctx *c, const struct oai_request *q,
                      const struct vision_prep_params *vp, int32_t n_images,
                      struct media_src *src, int64_t *budget_bytes, struct vlm_err *err)
{
    int32_t n_videos = 0;
    int64_t tokens = 0, bytes = 0;
    for (int32_t i = 0; i < q->n_media; i++) n_videos += q->media[i].kind == OAI_MEDIA_VIDEO;
    if (c->max_videos > 0 && n_videos > c->max_videos)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "at most %d videos per request", (int)c->max_videos);
    int64_t pictures = 0; /* images and sampled frames */
    for (int32_t i = 0; i < q->n_media; i++) {
        const struct oai_media_ref *m = &q->media[i];
        bool video = m->kind == OAI_MEDIA_VIDEO;
        int32_t w = 0, h = 0, t = 0, k = 1;
        int64_t b = 0;
        int rc = video ? video_opts(c, q, m, &src[i].vparams, err) : 0;
        if (!rc)
            rc = media_bytes(c, m->url, video ? c->video.max_bytes : c->media.max_bytes,
                             &src[i].bytes, &src[i].n, err);
        if (!rc && video) {
            struct video_info vi;
            rc = video_probe(src[i].bytes, src[i].n, &src[i].vparams, &vi, err);
            w = vi.w, h = vi.h, k = vi.num;
        } else if (!rc) {
            rc = media_probe_image(src[i].bytes, src[i].n, NULL, &w, &h, err);
            if (!rc && (int64_t)w * h > c->media.max_pixels)
                rc = vlm_err_set(err, VLM_ETOOBIG, 413,
                                 "image is %dx%d = %lld pixels, over the limit of %lld pixels",
                                 (int)w, (int)h, (long long)w * h,
                                 (long long)c->media.max_pixels);
        }
        if (!rc) rc = image_cost(vp, w, h, &t, &b, err);
        if (!rc && c->valley2) {
            int32_t ts = 0;
            int64_t bs = 0;
            rc = valley2_cost(c, w, h, n_images, &ts, &bs, err);
            t += ts;
            b += bs;
        }
        if (rc) {
            name_media_error(m, i, err);
            return rc;
        }
        tokens += (int64_t)k * t;
        bytes += (int64_t)k * b;
        pictures += k;
    }
    if (pictures > c->max_images)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "at most %d images and video frames per request (this one has "
                             "%lld)", (int)c->max_images, (long long)pictures);
    if (c->max_media_tokens > 0 && tokens > c->max_media_tokens)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "the request's images and video frames come to %lld tokens, over "
                             "this server's limit of %d media tokens per request",
                             (long long)tokens, (int)c->max_media_tokens);
    if (c->max_model_len > 0 && tokens + 1 > c->max_model_len)
        return vlm_err_param(err, VLM_ETOOBIG, 400, "messages",
                             "This model's maximum context length is %d tokens. However, your "
                             "request's images and videos alone take %lld tokens. Please send "
                             "fewer or smaller images or videos.",
                             (int)c->max_model_len, (long long)tokens);
    int rc = budget_take(c->budget, bytes, err);
    if (!rc) *budget_bytes = bytes;
    return rc;
}

/* ==== Prompts ==== */

void prep_prompt_destroy(struct prep_prompt *p)
{
    if (!p) return;
    i32_vec_free(&p->ids);
    for (int32_t i = 0; i < p->n_items; i++) {
        vision_prep_out_free(&p->items[i].v);
        valley2_prep_out_free(&p->items[i].sig);
    }
    free(p->items);
    memset(p, 0, sizeof *p);
}

static int chat_ids(const struct prep_ctx *c, const struct oai_request *q, struct prep_prompt *out,
                    struct vlm_err *err)
{
    if (q->n_media && !c->has_vision)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "this model has no vision tower; image parts are not accepted");
    int32_t n_pictures = 0;
    for (int32_t i = 0; i < q->n_media; i++) {
        if (q->media[i].kind == OAI_MEDIA_IMAGE) n_pictures++;
        else if (c->valley2)
            return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                                 "video parts are not supported for Valley2 checkpoints; send "
                                 "images");
    }
    /* decode every media entry first: a video's frame count decides its number of markers */
    struct vision_prep_params vp = c->vp;
    /* mm_processor_kwargs bound the processor's resize only (fetch_image keeps its own) */
    if (q->min_pixels) vp.proc_min_pixels = q->min_pixels;
    if (q->max_pixels) vp.proc_max_pixels = q->max_pixels;
    if (c->valley2) vp.proc_max_pixels = VLM_MIN(vp.proc_max_pixels, VALLEY2_PREP_QWEN2VL_MAX_PIXELS);
    int32_t *per_media = xcalloc((size_t)VLM_MAX(q->n_media, 1), sizeof *per_media);
    struct media_src *src = xcalloc((size_t)VLM_MAX(q->n_media, 1), sizeof *src);
    int64_t budget_bytes = 0;
    int rc = media_cost(c, q, &vp, n_pictures, src, &budget_bytes, err);
    for (int32_t i = 0; i < q->n_media && !rc; i++) {
        int32_t before = out->n_items;
        rc = load_media(c, &q->media[i], &src[i], i, &vp, n_pictures, &out->items, &out->n_items,
                        err);
        per_media[i] = out->n_items - before;
        free(src[i].bytes);
        src[i].bytes = NULL;
    }
    for (int32_t i = 0; i < q->n_media; i++) free(src[i].bytes);
    free(src);
    /* what was decoded, videos included, against the per-request limit */
    int64_t media_tokens = 0;
    for (int32_t i = 0; i < out->n_items; i++) media_tokens += prep_item_tokens(&out->items[i]);
    if (!rc && c->max_media_tokens > 0 && media_tokens > c->max_media_tokens)
        rc = vlm_err_param(err, VLM_EINVAL, 400, "messages",
                           "the request's images and video frames come to %lld tokens, over "
                           "this server's limit of %d media tokens per request",
                           (long long)media_tokens, (int)c->max_media_tokens);
    budget_give(c->budget, budget_bytes);
    struct chat_msg *msgs = xcalloc((size_t)q->n_msgs, sizeof *msgs);
    int32_t n_calls = 0;
    for (int32_t i = 0; i < q->n_msgs; i++) n_calls += q->msgs[i].n_tool_calls;
    struct chat_tool_call *calls = xcalloc((size_t)VLM_MAX(n_calls, 1), sizeof *calls);
    for (int32_t i = 0, m = 0, k = 0; i < q->n_msgs; i++) {
        const struct oai_message *qm = &q->msgs[i];
        msgs[i].role = qm->role == OAI_ROLE_SYSTEM ? CHAT_SYSTEM
                       : qm->role == OAI_ROLE_USER ? CHAT_USER
                       : qm->role == OAI_ROLE_TOOL ? CHAT_TOOL
                       : qm->role == OAI_ROLE_OTHER ? CHAT_OTHER
                                                   : CHAT_ASSISTANT;
        msgs[i].text = qm->text;
        for (int32_t j = 0; j < qm->n_media; j++) msgs[i].n_images += per_media[m++];
        msgs[i].tool_calls = calls + k;
        msgs[i].n_tool_calls = qm->n_tool_calls;
        for (int32_t j = 0; j < qm->n_tool_calls; j++, k++)
            calls[k] = (struct chat_tool_call){.name = qm->tool_calls[j].name,
                                               .arguments = qm->tool_calls[j].arguments};
    }
    free(per_media);
    out->thinking = !c->valley2 && (q->enable_thinking >= 0 ? q->enable_thinking
                                                             : c->enable_thinking_default);
    struct chat_opts o = {.qwen25 = c->valley2,
                          .enable_thinking = out->thinking,
                          .default_system = c->default_system,
                          .implicit_image = c->implicit_image && c->has_vision,
                          .wrap_image_tokens = c->wrap_image_tokens,
                          .tools = (const char *const *)q->tools,
                          .n_tools = q->n_tools,
                          .no_generation_prompt = !q->add_generation_prompt,
                          .continue_final = q->continue_final};
    struct i32_vec raw = {0};
    int32_t n_images = 0;
    if (!rc) rc = chat_build(c->tok, msgs, q->n_msgs, &o, &raw, &n_images, err);
    free(msgs);
    free(calls);
    if (rc) goto fail;
    if (n_images == out->n_items + 1 && out->n_items == 0) {
        /* the implicit image of a text-only conversation is image 0 */
        out->items = xcalloc(1, sizeof *out->items);
        if (c->valley2) {
            /* through both towers, as the reference does (docs/MODEL.md, "Valley2") */
            struct valley2_prep_item both;
            if ((rc = valley2_prep_placeholder(&c->v2, &vp, &both, err))) goto fail;
            out->items[0].v = both.qwen2vl;
            out->items[0].sig = both.siglip;
        } else if ((rc = vision_prep_placeholder(&vp, &out->items[0].v, err))) {
            goto fail;
        }
        out->n_items = 1;
    }
    if (NEVER(n_images != out->n_items)) {
        rc = vlm_err_param(err, VLM_EINVAL, 400, "messages",
                           "image markers do not match the images given");
        goto fail;
    }
    int32_t *n_tok = xcalloc((size_t)VLM_MAX(n_images, 1), sizeof *n_tok);
    int32_t *offs = xcalloc((size_t)VLM_MAX(n_images, 1), sizeof *offs);
    for (int32_t i = 0; i < n_images; i++) n_tok[i] = prep_item_tokens(&out->items[i]);
    rc = chat_expand_images(&raw, n_tok, n_images, c->pad_id, &out->ids, offs);
    if (rc) rc = vlm_err_param(err, rc, 400, "messages",
                               "image markers do not match the images given");
    for (int32_t i = 0; i < out->n_items && !rc; i++) out->items[i].offset = offs[i];
    free(n_tok);
    free(offs);
fail:
    i32_vec_free(&raw);
    return rc;
}

/* truncate_prompt_tokens (vLLM's left side): keep the last keep ids. An image cut in two
 * cannot be encoded: that is a 400. */
static int truncate_left(struct prep_prompt *out, int32_t keep, struct vlm_err *err)
{
    size_t drop = out->ids.n - (size_t)keep;
    for (int32_t i = 0; i < out->n_items; i++) {
        if ((size_t)out->items[i].offset < drop)
            return vlm_err_param(err, VLM_EINVAL, 400, "truncate_prompt_tokens",
                                 "'truncate_prompt_tokens' (%d) would cut image %d of the "
                                 "prompt", (int)keep, (int)i);
        out->items[i].offset -= (int32_t)drop;
    }
    memmove(out->ids.v, out->ids.v + drop, (size_t)keep * sizeof *out->ids.v);
    out->ids.n = (size_t)keep;
    return 0;
}

int prep_prompt_build(const struct prep_ctx *c, const struct oai_request *q, bool for_tokenize,
                      struct prep_prompt *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = 0;
    const char *what = "prompt";
    if (q->n_msgs) {
        what = "messages";
        rc = chat_ids(c, q, out, err);
    } else if (!q->prompt && !q->prompt_ids && q->n_prompts > 0) {
        /* a completions request straight from the parser: its first prompt */
        struct oai_request one = *q;
        one.prompt = q->prompts[0].text;
        one.prompt_len = q->prompts[0].len;
        one.prompt_ids = q->prompts[0].ids;
        one.n_prompt_ids = q->prompts[0].n_ids;
        one.n_prompts = 0;
        return prep_prompt_build(c, &one, for_tokenize, out, err);
    } else if (q->prompt) {
        rc = tok_encode(c->tok, q->prompt, q->prompt_len, &out->ids, err);
        if (rc && err) {
            err->http_status = rc == VLM_ENOMEM ? 503 : 400;
            snprintf(err->param, sizeof err->param, "prompt");
        }
    } else {
        i32_vec_append(&out->ids, q->prompt_ids, (size_t)q->n_prompt_ids);
    }
    if (rc) goto fail;
    if (for_tokenize) return 0;
    if (q->truncate_prompt_tokens > 0 && out->ids.n > (size_t)q->truncate_prompt_tokens &&
        (rc = truncate_left(out, q->truncate_prompt_tokens, err)))
        goto fail;
    int32_t n = (int32_t)out->ids.n, ctx = c->max_model_len;
    if (n == 0) {
        rc = vlm_err_param(err, VLM_EINVAL, 400, what, "the prompt is empty");
        goto fail;
    }
    if (c->max_prompt_len > 0 && n > c->max_prompt_len) {
        rc = vlm_err_param(err, VLM_ETOOBIG, 400, what,
                           "The prompt has %d tokens (images included), more than this model's "
                           "tokenizer_model_max_length %d. The reference would truncate it; "
                           "please reduce the length of the input.", (int)n,
                           (int)c->max_prompt_len);
        goto fail;
    }
    if (n + 1 > ctx) {
        rc = vlm_err_param(err, VLM_ETOOBIG, 400, what,
                           "This model's maximum context length is %d tokens. However, your "
                           "request has %d input tokens. Please reduce the length of the input.",
                           (int)ctx, (int)n);
        goto fail;
    }
    if (q->max_tokens > 0) {
        if ((int64_t)n + q->max_tokens > ctx) {
            rc = vlm_err_param(err, VLM_ETOOBIG, 400, "max_tokens",
                               "This model's maximum context length is %d tokens. However, you "
                               "requested %lld tokens (%d in the messages, %d in the "
                               "completion). Please reduce the length of the messages or "
                               "completion.",
                               (int)ctx, (long long)n + q->max_tokens, (int)n,
                               (int)q->max_tokens);
            goto fail;
        }
        out->max_tokens = q->max_tokens;
    } else {
        out->max_tokens = ctx - n;
        if (c->max_tokens_default > 0) out->max_tokens = VLM_MIN(out->max_tokens, c->max_tokens_default);
    }
    return 0;
fail:
    prep_prompt_destroy(out);
    return rc;
}
