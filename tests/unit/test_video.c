/*
 * Video: frame sampling equals numpy's floor(linspace) (the reference demo), frames equal the
 * ffmpeg CLI's frames at those indices (within 1 level), video_probe predicts the frame count
 * and size from the headers without decoding (for num_frames and fps sampling), and hostile
 * inputs fail cleanly.
 * Clips are generated here with the ffmpeg command-line tool into a temporary folder.
 */
#include "server/video.h"
#include "test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    return (uint8_t *)vlm_read_file(path, n);
}

/* Generates dir/name with ffmpeg arguments args (lavfi sources). */
static int make_clip(const char *name, const char *args)
{
    return sh("ffmpeg -nostdin -hide_banner -loglevel error -y %s %s/%s", args, dir, name);
}

/* Decodes the clip, checks indices against expect (if given) and every frame against the
 * ffmpeg CLI's frame at that index. */
static void check_clip(const char *name, int32_t num, const int32_t *expect, int64_t total)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n = 0;
    uint8_t *data = slurp(path, &n);
    CHECK(data != NULL);
    if (!data) return;
    struct video_params p;
    video_params_default(&p);
    p.num_frames = num;
    struct video_frames v;
    struct vlm_err err = {0};
    /* the headers say what the decode will find, without decoding a frame */
    struct video_info vi;
    uint64_t decoded = video_frames_decoded();
    CHECK_EQ(video_probe(data, n, &p, &vi, &err), 0);
    CHECK_EQ(video_frames_decoded(), decoded);
    int rc = video_decode(data, n, &p, &v, &err);
    if (rc) fprintf(stderr, "  %s: %s\n", name, err.msg);
    CHECK_EQ(rc, 0);
    if (rc) {
        free(data);
        return;
    }
    CHECK_EQ(v.n, num);
    CHECK_EQ(vi.num, v.n);
    CHECK(vi.w == v.frames[0].w && vi.h == v.frames[0].h);
    CHECK(video_frames_decoded() > decoded);
    /* fps sampling: the same count from the headers' duration as from the decode's */
    p.fps = 3.0;
    struct video_frames vf;
    CHECK_EQ(video_probe(data, n, &p, &vi, &err), 0);
    CHECK_EQ(video_decode(data, n, &p, &vf, &err), 0);
    CHECK_EQ(vi.num, vf.n);
    video_frames_free(&vf);
    if (total >= 0) CHECK_EQ(v.total_frames, total);
    for (int32_t i = 0; i < v.n; i++) {
        if (expect) CHECK_EQ(v.indices[i], expect[i]);
        char raw[600];
        snprintf(raw, sizeof raw, "%s/frame.raw", dir);
        CHECK_EQ(sh("ffmpeg -nostdin -hide_banner -loglevel error -y -i %s "
                    "-vf 'select=eq(n\\,%d)' -vsync 0 -frames:v 1 -pix_fmt rgb24 -f rawvideo %s",
                    path, v.indices[i], raw), 0);
        size_t rn = 0;
        uint8_t *ref = slurp(raw, &rn);
        CHECK(ref != NULL && rn == (size_t)v.frames[i].w * v.frames[i].h * 3);
        if (ref && rn == (size_t)v.frames[i].w * v.frames[i].h * 3) {
            int maxd = 0;
            for (size_t j = 0; j < rn; j++) {
                int d = abs((int)ref[j] - (int)v.frames[i].rgb[j]);
                if (d > maxd) maxd = d;
            }
            if (maxd > 1) fprintf(stderr, "  %s frame %d: max diff %d\n", name, v.indices[i], maxd);
            CHECK(maxd <= 1);
        }
        free(ref);
    }
    video_frames_free(&v);
    free(data);
}

static void check_bad(const char *label, const uint8_t *data, size_t n,
                      const struct video_params *p, int want_status)
{
    struct video_frames v;
    struct vlm_err err = {0};
    struct video_info vi;
    /* the probe never succeeds with more than the decode would give */
    if (video_probe(data, n, p, &vi, &err) == 0) CHECK(vi.num >= 1 && vi.w > 0 && vi.h > 0);
    int rc = video_decode(data, n, p, &v, &err);
    fprintf(stderr, "  %s -> %d %s\n", label, err.http_status, err.msg);
    CHECK(rc < 0);
    CHECK_EQ(err.http_status, want_status);
    CHECK(err.msg[0] != 0);
    CHECK(v.n == 0 && v.frames == NULL);
}

static void check_bad_file(const char *label, const char *name, const struct video_params *p,
                           int want_status)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n = 0;
    uint8_t *data = slurp(path, &n);
    CHECK(data != NULL);
    if (data) check_bad(label, data, n, p, want_status);
    free(data);
}

int main(void)
{
    if (system("ffmpeg -version >/dev/null 2>&1") != 0) TEST_SKIP("ffmpeg CLI not installed");
    snprintf(dir, sizeof dir, "/tmp/vlm-video-XXXXXX");
    if (!mkdtemp(dir)) return 1;

    TEST("sample indices equal numpy floor(linspace)") {
        struct { int64_t total; int32_t num; int32_t want[16]; } cases[] = {
            {60, 8, {0, 8, 16, 25, 33, 42, 50, 59}},
            {25, 8, {0, 3, 6, 10, 13, 17, 20, 24}},
            {10, 8, {0, 1, 2, 3, 5, 6, 7, 9}},
            {1, 8, {0, 0, 0, 0, 0, 0, 0, 0}},
            {600, 8, {0, 85, 171, 256, 342, 427, 513, 599}},
            {7, 8, {0, 0, 1, 2, 3, 4, 5, 6}},
            {1000, 16, {0, 66, 133, 199, 266, 333, 399, 466, 532, 599, 666, 732, 799, 865, 932, 999}},
            {3, 5, {0, 0, 1, 1, 2}},
            {97, 13, {0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96}},
        };
        for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
            int32_t got[16];
            video_sample_indices(cases[c].total, cases[c].num, got);
            for (int32_t i = 0; i < cases[c].num; i++) CHECK_EQ(got[i], cases[c].want[i]);
        }
    }

    TEST("H.264 in MP4") {
        CHECK_EQ(make_clip("h264.mp4", "-f lavfi -i testsrc2=size=160x120:rate=30:duration=2 "
                                       "-c:v libx264 -preset ultrafast -g 12 -pix_fmt yuv420p"), 0);
        int32_t want[] = {0, 8, 16, 25, 33, 42, 50, 59};
        check_clip("h264.mp4", 8, want, 60);
    }
    TEST("VP9 in WebM, odd size") {
        CHECK_EQ(make_clip("vp9.webm", "-f lavfi -i testsrc2=size=97x61:rate=25:duration=1 "
                                       "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 10"), 0);
        int32_t want[] = {0, 3, 6, 10, 13, 17, 20, 24};
        check_clip("vp9.webm", 8, want, 25);
    }
    TEST("MJPEG in MKV") {
        CHECK_EQ(make_clip("mjpeg.mkv", "-f lavfi -i testsrc2=size=64x48:rate=10:duration=1 "
                                        "-c:v mjpeg -q:v 3"), 0);
        int32_t want[] = {0, 1, 2, 3, 5, 6, 7, 9};
        check_clip("mjpeg.mkv", 8, want, 10);
    }
    TEST("one frame") {
        CHECK_EQ(make_clip("one.mp4", "-f lavfi -i testsrc2=size=64x64:rate=1 -frames:v 1 "
                                      "-c:v libx264 -preset ultrafast -pix_fmt yuv420p"), 0);
        int32_t want[] = {0, 0, 0, 0, 0, 0, 0, 0};
        check_clip("one.mp4", 8, want, 1);
    }
    TEST("10 s at 60 fps") {
        CHECK_EQ(make_clip("long.mp4", "-f lavfi -i testsrc2=size=64x48:rate=60:duration=10 "
                                       "-c:v libx264 -preset ultrafast -g 60 -pix_fmt yuv420p"), 0);
        int32_t want[] = {0, 85, 171, 256, 342, 427, 513, 599};
        check_clip("long.mp4", 8, want, 600);
    }
    TEST("variable frame rate") {
        CHECK_EQ(make_clip("vfr.mkv",
                           "-f lavfi -i testsrc2=size=64x48:rate=25:duration=1 "
                           "-vf \"setpts='if(lt(N,10),N*2,20+(N-10)*7)'\" -fps_mode passthrough "
                           "-c:v libx264 -preset ultrafast -g 5 -pix_fmt yuv420p"), 0);
        int32_t want[] = {0, 3, 6, 10, 13, 17, 20, 24};
        check_clip("vfr.mkv", 8, want, 25);
    }

    struct video_params p;
    video_params_default(&p);
    TEST("bad input: random bytes") {
        uint8_t junk[4096];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 2654435761u >> 13);
        check_bad("random", junk, sizeof junk, &p, 400);
    }
    TEST("bad input: empty") {
        check_bad("empty", (const uint8_t *)"", 0, &p, 400);
    }
    TEST("bad input: truncated MP4") {
        char path[512];
        snprintf(path, sizeof path, "%s/h264.mp4", dir);
        size_t n = 0;
        uint8_t *data = slurp(path, &n);
        CHECK(data != NULL);
        /* moov is written at the end by default: the first half has no index */
        if (data) check_bad("truncated", data, n / 2, &p, 400);
        free(data);
    }
    TEST("bad input: audio only") {
        CHECK_EQ(make_clip("audio.m4a", "-f lavfi -i sine=frequency=440:duration=1 -c:a aac"), 0);
        check_bad_file("audio only", "audio.m4a", &p, 400);
    }
    TEST("bad input: a PNG is not a video") {
        CHECK_EQ(make_clip("still.png", "-f lavfi -i color=c=red:s=16x16 -frames:v 1"), 0);
        /* a single PNG opens as an image2 stream of one frame: that is a (1-frame) video;
         * what must never happen is a crash. Require a clean answer either way. */
        char path[512];
        snprintf(path, sizeof path, "%s/still.png", dir);
        size_t n = 0;
        uint8_t *data = slurp(path, &n);
        struct video_frames v;
        struct vlm_err err = {0};
        int rc = data ? video_decode(data, n, &p, &v, &err) : -1;
        CHECK(rc == 0 || (err.http_status == 400 && err.msg[0]));
        if (rc == 0) video_frames_free(&v);
        free(data);
    }
    TEST("bad input: a 10-hour clip") {
        CHECK_EQ(make_clip("tenhours.mkv", "-f lavfi -i color=c=black:s=16x16:r=1/100:d=36000 "
                                           "-c:v mjpeg"), 0);
        check_bad_file("10 hours", "tenhours.mkv", &p, 413);
    }
    TEST("bad input: 16K resolution") {
        CHECK_EQ(make_clip("16k.mkv", "-f lavfi -i color=c=gray:s=15360x8640:d=1:r=1 "
                                      "-frames:v 1 -c:v mjpeg"), 0);
        check_bad_file("16K", "16k.mkv", &p, 413);
    }
    TEST("bad input: decoded frames over the memory limit") {
        struct video_params small = p;
        small.max_decoded_bytes = 100000; /* 8 frames of 160x120 RGB need 460800 */
        check_bad_file("memory", "h264.mp4", &small, 413);
    }

    sh("rm -rf %s", dir);
    return test_report();
}
