/*
 * bench_video: time to fetch a 10 s 1080p H.264 clip over loopback, decode it and sample 8
 * frames (the clip is generated with the ffmpeg CLI into /tmp on first use). The clip is
 * served by a tiny HTTP/1.1 server on 127.0.0.1 (a thread of this program) and fetched with
 * server/fetch.c exactly as a request's video_url would be. Prints figures; asserts nothing.
 *   build/tests/bench_video [clip.mp4]
 */
#include "server/fetch.h"
#include "server/video.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REPS 5

/* ==== A loopback server: answers REPS GETs with the clip, then exits ==== */

struct clip_server {
    int fd;                /* listening socket on 127.0.0.1 */
    const uint8_t *data;   /* borrowed, (n) */
    size_t n;
};

static void *serve(void *arg)
{
    struct clip_server *s = arg;
    char hdr[256], req[4096];
    int hn = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n", s->n);
    for (int i = 0; i < REPS; i++) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) break;
        if (recv(c, req, sizeof req, 0) > 0) { /* the request fits in one segment */
            ssize_t w = send(c, hdr, (size_t)hn, MSG_NOSIGNAL);
            for (size_t off = 0; w >= 0 && off < s->n; off += (size_t)w)
                if ((w = send(c, s->data + off, s->n - off, MSG_NOSIGNAL)) <= 0) break;
        }
        close(c);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 8) ||
        getsockname(fd, (struct sockaddr *)&a, &al)) {
        perror("bench_video: loopback server");
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

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
    int port = 0;
    struct clip_server srv = {.fd = listen_loopback(&port), .data = data, .n = n};
    if (srv.fd < 0) return 1;
    pthread_t th;
    if (pthread_create(&th, NULL, serve, &srv)) return 1;

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/clip.mp4", port);
    const char *allow[] = {"127.0.0.1/32"};
    struct fetch_limits fl = {.timeout_s = 30, .max_bytes = 512 << 20, .max_redirects = 3,
                              .allow = allow, .n_allow = 1};
    struct video_params p;
    video_params_default(&p);
    double best_f = 1e30, best_d = 1e30, best_t = 1e30, sum_t = 0;
    for (int r = 0; r < REPS; r++) {
        struct video_frames v;
        struct vlm_err err = {0};
        uint8_t *got = NULL;
        size_t gn = 0;
        uint64_t t0 = vlm_now_ns();
        if (fetch_url(url, &fl, &got, &gn, &err)) {
            fprintf(stderr, "bench_video: fetch: %s\n", err.msg);
            return 1;
        }
        uint64_t t1 = vlm_now_ns();
        if (video_decode(got, gn, &p, &v, &err)) {
            fprintf(stderr, "bench_video: %s\n", err.msg);
            return 1;
        }
        uint64_t t2 = vlm_now_ns();
        double f = (double)(t1 - t0) / 1e6, d = (double)(t2 - t1) / 1e6, t = f + d;
        if (f < best_f) best_f = f;
        if (d < best_d) best_d = d;
        if (t < best_t) best_t = t;
        sum_t += t;
        if (r == 0)
            printf("clip: %s, %zu bytes, %lld frames, %.2f s; sampled %d frames of %dx%d\n", path,
                   gn, (long long)v.total_frames, v.duration_s, v.n, v.frames[0].w,
                   v.frames[0].h);
        video_frames_free(&v);
        free(got);
    }
    pthread_join(th, NULL);
    close(srv.fd);
    printf("fetch over loopback: best %.1f ms\n", best_f);
    printf("decode+sample 8 frames: best %.1f ms (one thread)\n", best_d);
    printf("fetch+decode+sample: best %.1f ms, mean %.1f ms over %d runs\n", best_t,
           sum_t / REPS, REPS);
    free(data);
    return 0;
}
