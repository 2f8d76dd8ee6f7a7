/*
 * bench_video: time to decode and sample 8 frames from a 10 s 1080p H.264 clip (the clip is
 * generated with the ffmpeg CLI into /tmp on first use). Prints figures; asserts nothing.
 *   build/tests/bench_video [clip.mp4]
 */
#include "server/video.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/vlm-bench-1080p.mp4";
    if (argc < 2 && system("test -f /tmp/vlm-bench-1080p.mp4 || ffmpeg -nostdin -loglevel error "
                           "-f lavfi -i testsrc2=size=1920x1080:rate=30:duration=10 -c:v libx264 "
                           "-preset veryfast -g 60 -pix_fmt yuv420p /tmp/vlm-bench-1080p.mp4") != 0) {
        fprintf(stderr, "bench_video: could not generate the clip (ffmpeg CLI missing?)\n");
        return 1;
    }
    size_t n = 0;
    uint8_t *data = (uint8_t *)vlm_read_file(path, &n);
    if (!data) {
        perror(path);
        return 1;
    }
    struct video_params p;
    video_params_default(&p);
    double best = 1e30, sum = 0;
    int reps = 5;
    for (int r = 0; r < reps; r++) {
        struct video_frames v;
        struct vlm_err err = {0};
        uint64_t t0 = vlm_now_ns();
        if (video_decode(data, n, &p, &v, &err)) {
            fprintf(stderr, "bench_video: %s\n", err.msg);
            return 1;
        }
        double ms = (double)(vlm_now_ns() - t0) / 1e6;
        sum += ms;
        if (ms < best) best = ms;
        if (r == 0)
            printf("clip: %s, %zu bytes, %lld frames, %.2f s; sampled %d frames of %dx%d\n", path,
                   n, (long long)v.total_frames, v.duration_s, v.n, v.frames[0].w, v.frames[0].h);
        video_frames_free(&v);
    }
    printf("decode+sample 8 frames: best %.1f ms, mean %.1f ms over %d runs (one thread)\n", best,
           sum / reps, reps);
    free(data);
    return 0;
}
