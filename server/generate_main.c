/*
 * valley-generate: one prompt through the engine, the text streamed to stdout as it is
 * generated, timing on stderr. For trying a checkpoint and for the README's first command;
 * the server (valley-server) is the real front end.
 *
 *   valley-generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P]
 *                   [--top-k K] [--min-p P] [--repetition-penalty R] [--seed S]
 *                   [--image FILE] [--no-chat] [--think] [--threads N] [--block-size B]
 *                   [--backend auto|cpu|cuda] [--numerics exact|fast]
 *                   [--tensor-parallel-size N]
 *
 * With chat (the default) the prompt is one user message rendered by server/chat.c exactly
 * as Valley2.5's processor does, including the implicit 3x3 black image of text-only
 * requests when the model has a vision tower. --no-chat tokenizes the prompt as it is.
 * Generation stops at max tokens or at one of config.json's EOS ids. With
 * --tensor-parallel-size above 1 the steps run on a TP group (engine/tp.h) instead of one
 * engine; either way through the step interface (engine/executor.h), as in the server.
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tp.h"
#include "server/chat.h"
#include "server/media.h"
#include "server/tokenizer.h"
#include "server/vision_prep.h"

#include <stdio.h>
#include <stdlib.h>

struct gen_args {
    const char *model, *prompt, *image, *backend;
    int32_t max_tokens, threads, block_size, tp_size;
    enum numerics numerics; /* cpu backend products (fast, as the server) */
    bool no_chat, think;
    struct sampling_params sp;
};

static void usage(void)
{
    fprintf(stderr,
            "usage: valley-generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T]\n"
            "       [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R] [--seed S]\n"
            "       [--image FILE] [--no-chat] [--think] [--threads N] [--block-size B]\n"
            "       [--backend auto|cpu|cuda] [--numerics exact|fast] [--tensor-parallel-size N]\n"
            "  --numerics: the cpu backend's products: fast (default, as the server) rounds\n"
            "  activations to bf16; exact keeps them f32 (the f32 reference)\n");
}

static int parse_args(int argc, char **argv, struct gen_args *a)
{
    memset(a, 0, sizeof *a);
    a->max_tokens = 128;
    a->block_size = 16;
    a->tp_size = 1;
    a->numerics = NUMERICS_FAST;
    a->sp = sampler_params_greedy();
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool flag = true;
        if (!strcmp(k, "--no-chat")) a->no_chat = true;
        else if (!strcmp(k, "--think")) a->think = true;
        else if (!strcmp(k, "-h") || !strcmp(k, "--help")) return -1;
        else flag = false;
        if (flag) continue;
        if (!v) {
            fprintf(stderr, "valley-generate: %s needs a value\n", k);
            return -1;
        }
        i++;
        char *end = NULL;
        if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--prompt")) a->prompt = v;
        else if (!strcmp(k, "--image")) a->image = v;
        else if (!strcmp(k, "--backend")) a->backend = v;
        else if (!strcmp(k, "--max-tokens")) a->max_tokens = (int32_t)strtol(v, &end, 10);
        else if (!strcmp(k, "--threads")) a->threads = (int32_t)strtol(v, &end, 10);
        else if (!strcmp(k, "--numerics")) {
            if (!numerics_parse(v, &a->numerics)) {
                fprintf(stderr, "valley-generate: --numerics must be exact or fast\n");
                return -1;
            }
        }
        else if (!strcmp(k, "--block-size")) a->block_size = (int32_t)strtol(v, &end, 10);
        else if (!strcmp(k, "--tensor-parallel-size")) a->tp_size = (int32_t)strtol(v, &end, 10);
        else if (!strcmp(k, "--top-k")) a->sp.top_k = (int32_t)strtol(v, &end, 10);
        else if (!strcmp(k, "--seed")) a->sp.seed = strtoull(v, &end, 10);
        else if (!strcmp(k, "--temperature")) a->sp.temperature = strtof(v, &end);
        else if (!strcmp(k, "--top-p")) a->sp.top_p = strtof(v, &end);
        else if (!strcmp(k, "--min-p")) a->sp.min_p = strtof(v, &end);
        else if (!strcmp(k, "--repetition-penalty")) a->sp.repetition_penalty = strtof(v, &end);
        else {
            fprintf(stderr, "valley-generate: unknown option %s\n", k);
            return -1;
        }
        if (end && *end) {
            fprintf(stderr, "valley-generate: bad value for %s: %s\n", k, v);
            return -1;
        }
    }
    if (!a->model || !a->prompt) return -1;
    if (!a->backend) a->backend = "auto";
    if (strcmp(a->backend, "auto") && strcmp(a->backend, "cpu") && strcmp(a->backend, "cuda")) {
        fprintf(stderr, "valley-generate: --backend must be auto, cpu or cuda\n");
        return -1;
    }
    if (a->max_tokens < 1 || a->block_size < 1 || a->tp_size < 1 || a->sp.temperature < 0 ||
        a->sp.top_p <= 0 ||
        a->sp.top_p > 1 || a->sp.min_p < 0 || a->sp.min_p > 1 || a->sp.repetition_penalty <= 0) {
        fprintf(stderr, "valley-generate: a value is out of range\n");
        return -1;
    }
    return 0;
}

/* The image (from --image, or the implicit placeholder) through vision_prep. */
static int prep_image(const char *path, struct vision_prep_out *vo, struct vlm_err *err)
{
    struct vision_prep_params vp;
    vision_prep_params_default(&vp);
    if (!path) return vision_prep_placeholder(&vp, vo, err);
    size_t n = 0;
    char *data = vlm_read_file(path, &n);
    if (!data) return vlm_err_set(err, VLM_EIO, 400, "cannot read %s", path);
    struct media_image im = {0};
    int rc = media_decode_image((const uint8_t *)data, n, NULL, &im, err);
    free(data);
    if (rc) return rc;
    rc = vision_prep_image(&im, &vp, vo, err);
    media_image_free(&im);
    return rc;
}

static bool is_stop(const int32_t *stop, int32_t n_stop, int32_t id)
{
    for (int32_t i = 0; i < n_stop; i++)
        if (stop[i] == id) return true;
    return false;
}

int main(int argc, char **argv)
{
    struct gen_args a;
    if (parse_args(argc, argv, &a)) {
        usage();
        return 2;
    }
    struct vlm_err err = {0};
    struct model m = {0};
    struct tokenizer *tok = NULL;
    struct engine e = {0};
    struct tp_group *tp = NULL; /* --tensor-parallel-size > 1 (e stays unused) */
    struct executor ex;
    struct i32_vec ids = {0}, raw = {0};
    struct vision_prep_out vo = {0};
    struct strbuf text = {0};
    int32_t *blocks = NULL, *out_ids = NULL;
    int rc, status = 1;

    if ((rc = model_load(&m, a.model, &err))) goto fail;
    if ((rc = tok_load_dir(&tok, a.model, &err))) goto fail;
    int32_t stop[VLM_MAX_EOS + 2];
    int32_t n_stop = tok_stop_ids(tok, m.cfg.eos_token_ids, m.cfg.n_eos, stop, VLM_MAX_EOS + 2);

    /* ---- prompt ids (+ at most one image) ---- */
    int32_t n_images = 0;
    if (a.no_chat) {
        if (a.image) {
            vlm_err_set(&err, VLM_EINVAL, 400, "--image needs the chat prompt (drop --no-chat)");
            goto fail;
        }
        if ((rc = tok_encode(tok, a.prompt, strlen(a.prompt), &ids, &err))) goto fail;
    } else if (a.image && m.cfg.arch == MODEL_VALLEY2) {
        /* Valley2 images need both towers' inputs: valley-server prepares them */
        vlm_err_set(&err, VLM_EUNSUPPORTED, 400, "--image is not supported for Valley2 checkpoints "
                    "here; send images through valley-server");
        goto fail;
    } else {
        struct chat_msg msg = {.role = CHAT_USER, .text = a.prompt, .n_images = a.image ? 1 : 0};
        struct chat_opts co = {.qwen25 = m.cfg.arch == MODEL_VALLEY2, .enable_thinking = a.think,
                               .implicit_image = m.cfg.has_vision && m.cfg.arch != MODEL_VALLEY2,
                               .wrap_image_tokens = m.cfg.use_special_start_end_token};
        if ((rc = chat_build(tok, &msg, 1, &co, &raw, &n_images, &err))) goto fail;
        if (n_images > 1) {
            vlm_err_set(&err, VLM_EUNSUPPORTED, 400, "one image at most here");
            goto fail;
        }
    }
    struct mm_item item = {0};
    struct mm_span span = {0};
    if (n_images == 1) {
        if ((rc = prep_image(a.image, &vo, &err))) goto fail;
        item = (struct mm_item){.hash = vo.hash, .pixels = vo.pixels, .grid_t = vo.grid_t,
                                .grid_h = vo.grid_h, .grid_w = vo.grid_w,
                                .n_patches = vo.n_patches, .n_tokens = vo.n_tokens};
        int32_t pad = tok_find(tok, "<|image_pad|>");
        if ((rc = chat_expand_images(&raw, &vo.n_tokens, 1, pad >= 0 ? pad : 0, &ids,
                                     &span.offset))) {
            vlm_err_set(&err, rc, 400, "image markers do not match the images");
            goto fail;
        }
        span.item = &item;
    } else if (!a.no_chat) {
        i32_vec_append(&ids, raw.v, raw.n);
    }
    int32_t n_prompt = (int32_t)ids.n;
    if (n_prompt < 1) {
        vlm_err_set(&err, VLM_EINVAL, 400, "the prompt is empty");
        goto fail;
    }

    /* ---- engine sized for this one request ---- */
    int32_t total = n_prompt + a.max_tokens, bs = a.block_size;
    int32_t n_blocks = (total + bs - 1) / bs + 1;
    struct engine_params ep = {
        .bp = {.n_threads = a.threads, .numerics = a.numerics}, .block_size = bs, .n_blocks = n_blocks,
        .max_batched_tokens = VLM_MIN(n_prompt, 512), .max_seqs = 1,
        .encoder_cache_tokens = n_images ? item.n_tokens : 0,
        .max_image_patches = n_images ? item.n_patches : 0, .tp_size = a.tp_size,
    };
    bool use_cuda;
    enum backend_choice want = !strcmp(a.backend, "cuda") ? BACKEND_CUDA
                             : !strcmp(a.backend, "cpu")  ? BACKEND_CPU : BACKEND_AUTO;
    if ((rc = backend_pick(want, &use_cuda, &err))) goto fail;
    ep.backend = use_cuda ? ENGINE_BACKEND_CUDA : ENGINE_BACKEND_CPU;
    if (a.tp_size > 1) {
        if ((rc = tp_group_create(&tp, &m, &ep, &err))) goto fail;
        ex = tp_group_executor(tp);
    } else {
        if ((rc = engine_init(&e, &m, &ep, &err))) goto fail;
        ex = engine_executor(&e);
    }
    blocks = xmalloc((size_t)n_blocks * sizeof *blocks);
    for (int32_t i = 0; i < n_blocks - 1; i++) blocks[i] = i + 1;
    out_ids = xmalloc((size_t)a.max_tokens * sizeof *out_ids);

    /* ---- prefill in chunks, the last one samples the first token ---- */
    uint64_t t0 = vlm_now_ns();
    const struct mm_item *enc[1] = {&item};
    const int32_t enc_row = 0; /* the one image fills the encoder cache */
    struct batch_out bo;
    for (int32_t p0 = 0; p0 < n_prompt; p0 += ep.max_batched_tokens) {
        int32_t c = VLM_MIN(ep.max_batched_tokens, n_prompt - p0);
        struct batch_seq s = {.pos = p0, .n_tokens = c, .tokens = ids.v + p0, .blocks = blocks,
                              .n_blocks = n_blocks - 1, .mm = &span, .mm_row = &enc_row,
                              .n_mm = n_images,
                              .sp = p0 + c == n_prompt ? &a.sp : NULL, .prompt = ids.v,
                              .n_prompt = n_prompt, .output = out_ids, .n_out = 0};
        struct batch b = {.seqs = &s, .n_seqs = 1, .encode = enc, .encode_row = &enc_row,
                          .n_encode = p0 == 0 ? n_images : 0};
        if ((rc = ex.execute(ex.impl, &b, &bo))) {
            vlm_err_set(&err, rc, 500, "engine step failed: %s", vlm_strerror(rc));
            goto fail;
        }
    }
    uint64_t t1 = vlm_now_ns();

    /* ---- decode, streaming the text ---- */
    struct tok_stream ts;
    tok_stream_init(&ts);
    int32_t n_out = 0;
    for (;;) {
        int32_t id = bo.token[0];
        out_ids[n_out++] = id;
        text.n = 0;
        tok_stream_push(tok, &ts, id, true, &text);
        if (text.n) fwrite(text.s, 1, text.n, stdout);
        fflush(stdout);
        if (is_stop(stop, n_stop, id) || n_out == a.max_tokens) break;
        struct batch_seq s = {.pos = n_prompt + n_out - 1, .n_tokens = 1, .tokens = &out_ids[n_out - 1],
                              .blocks = blocks, .n_blocks = n_blocks - 1, .sp = &a.sp,
                              .prompt = ids.v, .n_prompt = n_prompt, .output = out_ids,
                              .n_out = n_out};
        struct batch b = {.seqs = &s, .n_seqs = 1};
        if ((rc = ex.execute(ex.impl, &b, &bo))) {
            vlm_err_set(&err, rc, 500, "engine step failed: %s", vlm_strerror(rc));
            goto fail;
        }
    }
    sb_free(&text);
    tok_stream_flush(&ts, &text);
    if (text.n) fwrite(text.s, 1, text.n, stdout);
    printf("\n");
    uint64_t t2 = vlm_now_ns();
    double pre_s = (double)(t1 - t0) * 1e-9, dec_s = (double)(t2 - t1) * 1e-9;
    fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s "
                    "(%.1f tok/s)\n",
            n_prompt, pre_s, n_prompt / pre_s, n_out, dec_s,
            n_out > 1 ? (n_out - 1) / dec_s : 0.0);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "valley-generate: %s\n", err.msg[0] ? err.msg : vlm_strerror(rc));
done:
    free(blocks);
    free(out_ids);
    tp_group_destroy(tp);
    engine_destroy(&e);
    vision_prep_out_free(&vo);
    i32_vec_free(&ids);
    i32_vec_free(&raw);
    sb_free(&text);
    tok_free(tok);
    model_destroy(&m);
    return status;
}
