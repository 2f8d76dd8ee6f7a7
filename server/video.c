/*
 * video: sampled frames of a clip through FFmpeg (libavformat, libavcodec, libswscale).
 * See video.h for the method and the limits.
 */
#include "server/video.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* frames the sampling decoder has produced, all requests together (video_frames_decoded) */
static _Atomic uint64_t frames_decoded;

uint64_t video_frames_decoded(void)
{
    return atomic_load_explicit(&frames_decoded, memory_order_relaxed);
}

/* ==== Parameters and sampling ==== */

void video_params_default(struct video_params *p)
{
    *p = (struct video_params){
        .num_frames = 8,
        .fps = 0.0,
        .max_frames = 64,
        .max_duration_s = 3600.0,
        .max_frame_pixels = 4096LL * 4096LL,
        .max_decoded_bytes = (size_t)1 << 30,
        .max_bytes = (size_t)512 << 20,
    };
}

void video_sample_indices(int64_t total, int32_t num, int32_t *idx)
{
    /* numpy.linspace(0, total - 1, num): step = (stop - start) / (num - 1), y = i * step,
     * and the last element is set to stop exactly; astype(int) truncates toward zero. */
    if (num == 1) {
        idx[0] = 0;
        return;
    }
    double step = (double)(total - 1) / (double)(num - 1);
    for (int32_t i = 0; i < num; i++) idx[i] = (int32_t)((double)i * step);
    idx[num - 1] = (int32_t)(total - 1);
}

void video_frames_free(struct video_frames *v)
{
    if (!v) return;
    for (int32_t i = 0; v->frames && i < v->n; i++) media_image_free(&v->frames[i]);
    free(v->frames);
    free(v->indices);
    memset(v, 0, sizeof *v);
}

/* ==== Reading from memory ==== */

struct membuf {
    const uint8_t *data;
    size_t n, pos;
};

static int mem_read(void *opaque, uint8_t *buf, int size)
{
    struct membuf *m = opaque;
    size_t left = m->n - m->pos;
    if (left == 0) return AVERROR_EOF;
    size_t k = (size_t)size < left ? (size_t)size : left;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return (int)k;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence)
{
    struct membuf *m = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return (int64_t)m->n;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)m->pos; break;
    case SEEK_END: base = (int64_t)m->n; break;
    default: return -1;
    }
    int64_t p = base + off;
    if (p < 0 || p > (int64_t)m->n) return -1;
    m->pos = (size_t)p;
    return p;
}

/* ==== Decoding state ==== */

struct frame_ts {
    int64_t pts;
    int key;
};

struct vdec {
    struct membuf mem;
    AVIOContext *io;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    struct SwsContext *sws;
    int stream;
    int eof;              /* demuxer hit the end; decoder drained */
    int64_t last_pts;     /* pts of the last frame the decoder returned, INT64_MIN if none */
};

static void vdec_close(struct vdec *d)
{
    sws_freeContext(d->sws);
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
    avcodec_free_context(&d->dec);
    avformat_close_input(&d->fmt);
    if (d->io) av_freep(&d->io->buffer);
    avio_context_free(&d->io);
}

static int cmp_ts(const void *a, const void *b)
{
    int64_t x = ((const struct frame_ts *)a)->pts, y = ((const struct frame_ts *)b)->pts;
    return (x > y) - (x < y);
}

static void quiet_ffmpeg(void)
{
    av_log_set_level(AV_LOG_QUIET);
}

static int bad(struct vlm_err *err, const char *what)
{
    return vlm_err_set(err, VLM_EINVAL, 400, "video: %s", what);
}

/* Opens the container from memory and picks the video stream; with full, also reads the
 * stream info (libavformat may decode a few frames of its own for that) and opens the
 * decoder. Without full, only what the container's headers say is known; when they do not
 * give the frame size, the stream info is read after all. */
static int vdec_open(struct vdec *d, const uint8_t *data, size_t n, bool full,
                     struct vlm_err *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, quiet_ffmpeg);
    d->mem = (struct membuf){data, n, 0};
    d->last_pts = INT64_MIN;
    uint8_t *iobuf = av_malloc(65536);
    if (!iobuf) return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    d->io = avio_alloc_context(iobuf, 65536, 0, &d->mem, mem_read, NULL, mem_seek);
    if (!d->io) {
        av_free(iobuf);
        return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    }
    d->fmt = avformat_alloc_context();
    if (!d->fmt) return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    d->fmt->pb = d->io;
    d->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    d->fmt->probesize = 8 << 20;
    d->fmt->max_analyze_duration = 5 * AV_TIME_BASE;
    if (avformat_open_input(&d->fmt, NULL, NULL, NULL) < 0) {
        d->fmt = NULL; /* freed by avformat_open_input on failure */
        return bad(err, "not a video file (unknown container)");
    }
    const AVCodec *codec = NULL;
    bool info = full;
    for (;;) {
        if (info && avformat_find_stream_info(d->fmt, NULL) < 0)
            return bad(err, "cannot read stream info");
        d->stream = av_find_best_stream(d->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
        if (info || (d->stream >= 0 && d->fmt->streams[d->stream]->codecpar->width > 0 &&
                     d->fmt->streams[d->stream]->codecpar->height > 0))
            break;
        info = true; /* the headers alone do not say: read the stream info */
    }
    if (d->stream < 0 || !codec) {
        return d->stream == AVERROR_DECODER_NOT_FOUND
                   ? bad(err, "no decoder for the video codec")
                   : bad(err, "the file has no video stream");
    }
    AVStream *st = d->fmt->streams[d->stream];
    if (st->disposition & AV_DISPOSITION_ATTACHED_PIC) return bad(err, "the file has no video stream");
    if (!full) return 0;
    d->dec = avcodec_alloc_context3(codec);
    if (!d->dec) return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    if (avcodec_parameters_to_context(d->dec, st->codecpar) < 0) return bad(err, "bad codec parameters");
    d->dec->thread_count = 1;
    if (avcodec_open2(d->dec, codec, NULL) < 0) return bad(err, "cannot open the video decoder");
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->pkt || !d->frame) return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    return 0;
}

/* Reads every packet of the stream once (no decoding) and returns their presentation times
 * in order, with keyframe flags. */
static int vdec_index(struct vdec *d, int64_t max_packets, struct frame_ts **out, int64_t *n_out,
                      struct vlm_err *err)
{
    struct frame_ts *ts = NULL;
    int64_t n = 0, cap = 0;
    int rc;
    while ((rc = av_read_frame(d->fmt, d->pkt)) >= 0) {
        if (d->pkt->stream_index == d->stream) {
            if (n == max_packets) {
                av_packet_unref(d->pkt);
                free(ts);
                return vlm_err_set(err, VLM_ETOOBIG, 413, "video: too many frames (over %lld)",
                                   (long long)max_packets);
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                struct frame_ts *t2 = tryrealloc(ts, (size_t)cap * sizeof *ts);
                if (!t2) {
                    av_packet_unref(d->pkt);
                    free(ts);
                    return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
                }
                ts = t2;
            }
            int64_t p = d->pkt->pts != AV_NOPTS_VALUE ? d->pkt->pts : d->pkt->dts;
            if (p == AV_NOPTS_VALUE) p = n; /* no timestamps: decode order */
            ts[n++] = (struct frame_ts){p, !!(d->pkt->flags & AV_PKT_FLAG_KEY)};
        }
        av_packet_unref(d->pkt);
    }
    if (rc != AVERROR_EOF && n == 0) {
        free(ts);
        return bad(err, "cannot read the video stream (truncated or corrupt)");
    }
    if (n == 0) {
        free(ts);
        return bad(err, "the video stream has no frames");
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_ts);
    *out = ts;
    *n_out = n;
    return 0;
}

static int vdec_seek(struct vdec *d, int64_t pts)
{
    int rc = av_seek_frame(d->fmt, d->stream, pts, AVSEEK_FLAG_BACKWARD);
    if (rc < 0) rc = av_seek_frame(d->fmt, d->stream, 0, AVSEEK_FLAG_BACKWARD | AVSEEK_FLAG_BYTE);
    avcodec_flush_buffers(d->dec);
    d->eof = 0;
    d->last_pts = INT64_MIN;
    return rc;
}

/* Decodes forward until a frame with pts >= target is in d->frame. 0, or <0 at the end. */
static int vdec_decode_to(struct vdec *d, int64_t target)
{
    for (;;) {
        int rc = avcodec_receive_frame(d->dec, d->frame);
        if (rc == 0) {
            atomic_fetch_add_explicit(&frames_decoded, 1, memory_order_relaxed);
            int64_t p = d->frame->best_effort_timestamp;
            if (p == AV_NOPTS_VALUE) p = d->frame->pts;
            if (p == AV_NOPTS_VALUE) p = d->last_pts == INT64_MIN ? 0 : d->last_pts + 1;
            d->last_pts = p;
            if (p >= target) return 0;
            av_frame_unref(d->frame);
            continue;
        }
        if (rc == AVERROR_EOF) return -1;
        if (rc != AVERROR(EAGAIN)) return -1;
        if (d->eof) return -1;
        rc = av_read_frame(d->fmt, d->pkt);
        if (rc < 0) {
            d->eof = 1;
            avcodec_send_packet(d->dec, NULL); /* drain */
            continue;
        }
        if (d->pkt->stream_index == d->stream) {
            rc = avcodec_send_packet(d->dec, d->pkt);
            if (rc < 0 && rc != AVERROR(EAGAIN) && rc != AVERROR_INVALIDDATA) {
                av_packet_unref(d->pkt);
                return -1;
            }
        }
        av_packet_unref(d->pkt);
    }
}

/* Converts d->frame to RGB24 with the bicubic swscale path the ffmpeg CLI uses by default. */
static int vdec_to_rgb(struct vdec *d, const struct video_params *p, struct media_image *out,
                       struct vlm_err *err)
{
    AVFrame *f = d->frame;
    if (f->width <= 0 || f->height <= 0) return bad(err, "a decoded frame has no size");
    if ((int64_t)f->width * f->height > p->max_frame_pixels)
        return vlm_err_set(err, VLM_ETOOBIG, 413, "video: frame %dx%d is over the %lld-pixel limit",
                           f->width, f->height, (long long)p->max_frame_pixels);
    d->sws = sws_getCachedContext(d->sws, f->width, f->height, f->format, f->width, f->height,
                                  AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
    if (!d->sws) return bad(err, "unsupported pixel format");
    if (f->color_range == AVCOL_RANGE_JPEG) {
        int *inv, *tab, sr, dr, br, con, sat;
        if (sws_getColorspaceDetails(d->sws, &inv, &sr, &tab, &dr, &br, &con, &sat) >= 0)
            sws_setColorspaceDetails(d->sws, inv, 1, tab, dr, br, con, sat);
    }
    int rc = media_image_fill(out, f->width, f->height, 0, 0, 0, err);
    if (rc) return rc;
    /* swscale's SIMD writers may store past the end of a row (and of the last one) when the
     * row is not a multiple of their width: convert into a padded, 64-byte aligned scratch
     * image and copy the rows out, rather than into the tight out->rgb. */
    uint8_t *dst[4] = {NULL};
    int stride[4] = {0};
    if (av_image_alloc(dst, stride, f->width, f->height + 1, AV_PIX_FMT_RGB24, 64) < 0)
        return vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
    sws_scale(d->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    size_t row = (size_t)f->width * 3;
    for (int y = 0; y < f->height; y++)
        memcpy(out->rgb + (size_t)y * row, dst[0] + (size_t)y * (size_t)stride[0], row);
    av_freep(&dst[0]);
    return 0;
}

/* ==== The whole path ==== */

/* What the container says, checked against the limits: frame size, duration (0 when not
 * given) and the stream. */
static int vdec_header(struct vdec *d, const struct video_params *p, int64_t *w, int64_t *h,
                       double *duration, struct vlm_err *err)
{
    AVStream *st = d->fmt->streams[d->stream];
    *duration = d->fmt->duration != AV_NOPTS_VALUE ? (double)d->fmt->duration / AV_TIME_BASE
                : st->duration != AV_NOPTS_VALUE ? (double)st->duration * av_q2d(st->time_base)
                                                 : 0.0;
    if (*duration > p->max_duration_s)
        return vlm_err_set(err, VLM_ETOOBIG, 413, "video: %.0f s is over the %.0f-second limit",
                           *duration, p->max_duration_s);
    *w = st->codecpar->width;
    *h = st->codecpar->height;
    if (*w <= 0 || *h <= 0) return bad(err, "the video stream has no frame size");
    if (*w * *h > p->max_frame_pixels)
        return vlm_err_set(err, VLM_ETOOBIG, 413,
                           "video: resolution %lldx%lld is over the %lld-pixel limit",
                           (long long)*w, (long long)*h, (long long)p->max_frame_pixels);
    return 0;
}

/* at most 1000 frames per second of the allowed duration, and at least a few thousand */
static int64_t max_packets(const struct video_params *p)
{
    return (int64_t)(p->max_duration_s * 1000.0) + 4096;
}

/* The number of frames sampled (docs/MODEL.md, "Video"): num_frames, or round(duration *
 * fps) when fps is given; at least 1, at most max_frames. */
static int32_t sample_count(const struct video_params *p, double duration)
{
    int32_t num = p->num_frames;
    if (p->fps > 0.0) num = (int32_t)lround(duration * p->fps);
    if (num < 1) num = 1;
    if (num > p->max_frames) num = p->max_frames;
    return num;
}

/* Checks that num frames of w x h fit the decoded-memory limit. */
static int decoded_fits(const struct video_params *p, int32_t num, int64_t w, int64_t h,
                        struct vlm_err *err)
{
    size_t frame_bytes = (size_t)(w * h * 3), all;
    if (!vlm_mul_ok(frame_bytes, (size_t)num, &all) || all > p->max_decoded_bytes)
        return vlm_err_set(err, VLM_ETOOBIG, 413,
                           "video: %d frames of %lldx%lld exceed the decoded-memory limit", num,
                           (long long)w, (long long)h);
    return 0;
}

/* The common start of the probe and the decode: the size limits, the container opened from
 * memory (with full, the decoder too) and its header checked. d is closed by the caller. */
static int vdec_start(struct vdec *d, const uint8_t *data, size_t n, const struct video_params *p,
                      bool full, int64_t *w, int64_t *h, double *duration, struct vlm_err *err)
{
    if (n == 0) return bad(err, "empty video");
    if (n > p->max_bytes)
        return vlm_err_set(err, VLM_ETOOBIG, 413, "video: %zu bytes is over the %zu-byte limit",
                           n, p->max_bytes);
    int rc = vdec_open(d, data, n, full, err);
    return rc ? rc : vdec_header(d, p, w, h, duration, err);
}

int video_probe(const uint8_t *data, size_t n, const struct video_params *p,
                struct video_info *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    struct vdec d = {0};
    int64_t w = 0, h = 0;
    double duration = 0;
    int rc = vdec_start(&d, data, n, p, false, &w, &h, &duration, err);
    if (!rc && duration <= 0.0 && p->fps > 0.0) {
        /* no duration in the headers: the packets' timestamps give it (no decoding) */
        struct frame_ts *ts = NULL;
        int64_t total = 0;
        AVStream *st = d.fmt->streams[d.stream];
        d.pkt = av_packet_alloc();
        rc = d.pkt ? vdec_index(&d, max_packets(p), &ts, &total, err)
                   : vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
        if (!rc && st->time_base.den > 0)
            duration = (double)(ts[total - 1].pts - ts[0].pts) * av_q2d(st->time_base);
        free(ts);
    }
    if (!rc) {
        out->w = (int32_t)w;
        out->h = (int32_t)h;
        out->duration_s = duration;
        out->num = sample_count(p, duration);
        rc = decoded_fits(p, out->num, w, h, err);
    }
    vdec_close(&d);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

int video_decode(const uint8_t *data, size_t n, const struct video_params *p,
                 struct video_frames *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    struct vdec d = {0};
    struct frame_ts *ts = NULL;
    int64_t total = 0, w = 0, h = 0;
    double duration = 0;
    int rc = vdec_start(&d, data, n, p, true, &w, &h, &duration, err);
    if (!rc) rc = vdec_index(&d, max_packets(p), &ts, &total, err);
    if (rc) goto done;
    AVStream *st = d.fmt->streams[d.stream];
    if (duration <= 0.0 && st->time_base.den > 0)
        duration = (double)(ts[total - 1].pts - ts[0].pts) * av_q2d(st->time_base);
    int32_t num = sample_count(p, duration);
    if ((rc = decoded_fits(p, num, w, h, err))) goto done;
    out->indices = trycalloc((size_t)num, sizeof *out->indices);
    out->frames = trycalloc((size_t)num, sizeof *out->frames);
    if (!out->indices || !out->frames) {
        rc = vlm_err_set(err, VLM_ENOMEM, 503, "video: out of memory");
        goto done;
    }
    video_sample_indices(total, num, out->indices);
    out->total_frames = total;
    out->duration_s = duration;

    vdec_seek(&d, ts[0].pts);
    for (int32_t i = 0; i < num; i++) {
        int32_t k = out->indices[i];
        if (i > 0 && k == out->indices[i - 1]) { /* fewer frames than samples: repeat */
            struct media_image *prev = &out->frames[i - 1];
            rc = media_image_fill(&out->frames[i], prev->w, prev->h, 0, 0, 0, err);
            if (rc) goto done;
            memcpy(out->frames[i].rgb, prev->rgb, (size_t)prev->w * prev->h * 3);
            out->n = i + 1;
            continue;
        }
        int64_t target = ts[k].pts;
        /* keep decoding forward when no keyframe lies between here and the target */
        int64_t key = ts[0].pts;
        for (int64_t j = k; j >= 0; j--)
            if (ts[j].key) {
                key = ts[j].pts;
                break;
            }
        if (d.eof || d.last_pts == INT64_MIN || d.last_pts >= target || key > d.last_pts)
            vdec_seek(&d, target);
        if (vdec_decode_to(&d, target) < 0) {
            /* a damaged tail: retry once from the start, decoding forward */
            vdec_seek(&d, ts[0].pts);
            if (vdec_decode_to(&d, target) < 0) {
                rc = bad(err, "cannot decode the sampled frames (truncated or corrupt)");
                goto done;
            }
        }
        rc = vdec_to_rgb(&d, p, &out->frames[i], err);
        av_frame_unref(d.frame);
        if (rc) goto done;
        out->n = i + 1;
    }
    rc = 0;
done:
    free(ts);
    vdec_close(&d);
    if (rc) video_frames_free(out);
    return rc;
}
