/*
 * video: turns the bytes of a video (MP4, WebM, MKV, ... anything libavformat opens) into the
 * frames the reference feeds to the model: num_frames indices spaced uniformly over the whole
 * clip, floor(linspace(0, n - 1, num_frames)) as numpy computes it (docs/MODEL.md, "Video"), each
 * frame converted to 8-bit RGB. Every sampled frame then goes through vision_prep exactly like
 * an image, with its own <image> marker.
 *
 * How frames are found: one demux pass reads packet timestamps only (no decoding) and sorts
 * them, so frame i is the i-th presentation time — exact for variable frame rates, as decord
 * does it. Each sampled frame is then reached by seeking to the keyframe before it and
 * decoding forward; a seek is skipped when the next target lies after the current position
 * and before the next keyframe. Only the sampled frames are ever held in memory.
 *
 * Limits are checked before allocating: container duration, resolution, the number of
 * packets indexed, and the decoded bytes of all sampled frames. Every failure is a
 * VLM_E* code with a message and an HTTP status (400, or 413 for VLM_ETOOBIG). Thread-safe:
 * the only global state is a counter of decoded frames (and FFmpeg's logging, silenced once).
 *
 * Cost before work: video_probe reads only the container's headers (frame size, duration),
 * so the number of sampled frames, and from it the request's media tokens, are known before
 * a single frame is decoded (prep.c refuses a request over its limits there).
 */
#ifndef VLM_VIDEO_H
#define VLM_VIDEO_H

#include "server/media.h"

struct video_params {
    int32_t num_frames;       /* frames to sample (reference: 8); used when fps <= 0 */
    double fps;               /* > 0: sample round(duration * fps) frames, clamped */
    int32_t max_frames;       /* upper bound on sampled frames */
    double max_duration_s;    /* longer clips are refused */
    int64_t max_frame_pixels; /* width * height per frame */
    size_t max_decoded_bytes; /* all sampled RGB frames together */
    size_t max_bytes;         /* encoded size */
};
void video_params_default(struct video_params *p);

struct video_frames {
    int32_t n;                  /* sampled frames */
    struct media_image *frames; /* (n) owned */
    int32_t *indices;           /* (n) frame index of each sample, owned */
    int64_t total_frames;       /* frames in the clip */
    double duration_s;
};
void video_frames_free(struct video_frames *v); /* accepts a zeroed struct */

/* numpy's floor(linspace(0, total - 1, num)) into idx (num entries). total >= 1, num >= 1. */
void video_sample_indices(int64_t total, int32_t num, int32_t *idx);

/* What the container's headers say about a clip, under the same limits as video_decode. */
struct video_info {
    int32_t w, h;       /* frame size */
    int32_t num;        /* frames video_decode will sample */
    double duration_s;  /* 0 when the headers do not give it */
};

/* Opens data[0..n) and fills *out from the headers, decoding nothing (when the headers give
 * no duration and p->fps is set, the packets are read for their timestamps, still without
 * decoding). The same limit checks as video_decode (size, duration, resolution, decoded
 * bytes). *out is zeroed on failure. */
int video_probe(const uint8_t *data, size_t n, const struct video_params *p,
                struct video_info *out, struct vlm_err *err);

/* Frames decoded by video_decode since the process started (GET /metrics). */
uint64_t video_frames_decoded(void);

/* Decodes the sampled frames of data[0..n). *out is zeroed on failure. */
int video_decode(const uint8_t *data, size_t n, const struct video_params *p,
                 struct video_frames *out, struct vlm_err *err);

#endif
