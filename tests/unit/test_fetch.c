/*
 * fetch: the address policy (allow-list matching; private, loopback, link-local, CGNAT,
 * multicast and IPv6-embedded addresses refused before any connection), URL parsing
 * refusals, and the http client against a canned server thread on 127.0.0.1 (plain and
 * chunked bodies, redirects, redirect loops and caps, a redirect to a private address, 404,
 * a byte cap, a stalled server cut by the deadline and, with a long deadline, by the
 * low-speed rule; fetch_cancel_all). Never connects anywhere but 127.0.0.1.
 */
#include "server/fetch.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ==== A canned HTTP server on 127.0.0.1 ==== */

struct canned {
    int lfd, stop_rd, stop_wr, port;
    int held[8]; /* stalled connections, closed at the end */
    int n_held;
};

static void reply(int c, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(c, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void answer(struct canned *k, int c)
{
    char req[2048] = "", out[1024];
    ssize_t r = recv(c, req, sizeof req - 1, 0);
    if (r <= 0) {
        close(c);
        return;
    }
    char path[256] = "";
    sscanf(req, "GET %255s", path);
    const char *body = "hello media";
    int n = 0;
    if (!strcmp(path, "/ok")) {
        n = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    } else if (!strcmp(path, "/chunked")) {
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                     "6\r\n media\r\n0\r\n\r\n");
    } else if (!strcmp(path, "/redir")) {
        n = snprintf(out, sizeof out, "HTTP/1.1 302 Found\r\nLocation: /ok\r\n\r\n");
    } else if (!strcmp(path, "/redir-abs")) {
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:%d/redir\r\n\r\n", k->port);
    } else if (!strcmp(path, "/loop")) {
        n = snprintf(out, sizeof out, "HTTP/1.1 302 Found\r\nLocation: /loop\r\n\r\n");
    } else if (!strcmp(path, "/to-private")) {
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 302 Found\r\nLocation: http://10.9.8.7/x\r\n\r\n");
    } else if (!strcmp(path, "/to-ftp")) {
        n = snprintf(out, sizeof out, "HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\n\r\n");
    } else if (!strcmp(path, "/big")) {
        n = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n");
        reply(c, out, (size_t)n);
        char zeros[4096] = {0};
        reply(c, zeros, sizeof zeros);
        close(c);
        return;
    } else if (!strcmp(path, "/stall")) {
        if (k->n_held < 8) {
            k->held[k->n_held++] = c; /* never answered */
            return;
        }
    } else {
        n = snprintf(out, sizeof out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
    reply(c, out, (size_t)n);
    close(c);
}

static void *canned_main(void *arg)
{
    struct canned *k = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = k->lfd, .events = POLLIN}, {.fd = k->stop_rd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents) break;
        int c = accept(k->lfd, NULL, NULL);
        if (c >= 0) answer(k, c);
    }
    for (int i = 0; i < k->n_held; i++) close(k->held[i]);
    return NULL;
}

/* ==== Helpers ==== */

static int get(const char *url, const char *const *allow, int32_t n_allow, int64_t max_bytes,
               double timeout_s, int32_t max_redirects, struct strbuf *body, struct vlm_err *err)
{
    struct fetch_limits fl = {.timeout_s = timeout_s, .max_bytes = max_bytes,
                              .max_redirects = max_redirects, .allow = allow, .n_allow = n_allow};
    uint8_t *out = NULL;
    size_t n = 0;
    memset(err, 0, sizeof *err);
    int rc = fetch_url(url, &fl, &out, &n, err);
    if (!rc && body) sb_append(body, (const char *)out, n);
    free(out);
    return rc;
}

int main(void)
{
    TEST("allow list: addresses and CIDRs, v4 and v6") {
        const char *allow[] = {"127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "192.168.1.7", "bad/99"};
        CHECK(fetch_addr_allowed("127.0.0.1", allow, 5));
        CHECK(!fetch_addr_allowed("127.0.0.2", allow, 5));
        CHECK(fetch_addr_allowed("10.200.3.4", allow, 5));
        CHECK(!fetch_addr_allowed("11.0.0.1", allow, 5));
        CHECK(fetch_addr_allowed("fd12::1", allow, 5));
        CHECK(!fetch_addr_allowed("fe80::1", allow, 5));
        CHECK(fetch_addr_allowed("192.168.1.7", allow, 5));
        CHECK(!fetch_addr_allowed("192.168.1.8", allow, 5));
        CHECK(!fetch_addr_allowed("::1", allow, 5));
        CHECK(!fetch_addr_allowed("not-an-address", allow, 5));
        CHECK(!fetch_addr_allowed("127.0.0.1", allow, 0));
    }

    TEST("private, loopback, link-local, CGNAT, multicast: refused before connecting") {
        static const char *urls[] = {
            "http://10.0.0.1/x", "http://10.255.255.255:8080/x", "http://127.0.0.1/x",
            "http://127.9.9.9/x", "http://169.254.169.254/latest/meta-data/",
            "http://172.16.0.1/x", "http://172.31.255.1/x", "http://192.168.0.1/x",
            "http://100.64.0.1/x", "http://100.127.255.254/x", "http://0.0.0.0/x",
            "http://224.0.0.251/x", "http://255.255.255.255/x", "http://[::1]/x",
            "http://[::]/x", "http://[fe80::1]/x", "http://[fc00::1]/x", "http://[fd00::5]/x",
            "http://[ff02::1]/x", "http://[::ffff:10.0.0.1]/x", "http://[::ffff:127.0.0.1]/x",
            "http://[64:ff9b::a00:1]/x", "http://[fec0::1]/x", "https://10.0.0.1/x",
            "https://[fe80::1]/x", "https://169.254.169.254/x",
        };
        const char *allow[] = {"127.0.0.2/32"};
        for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
            struct vlm_err err;
            int rc = get(urls[i], allow, 1, 1 << 20, 5, 3, NULL, &err);
            CHECK_EQ(rc, VLM_EINVAL);
            CHECK_EQ(err.http_status, 400);
            if (!strstr(err.msg, "private")) {
                printf("  %s: %s\n", urls[i], err.msg);
                CHECK(0);
            }
        }
    }

    TEST("malformed or unsupported URLs") {
        static const char *urls[] = {"ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://a/b",
                                     "http://user:pw@127.0.0.1/x", "http:///x", "http://[::1/x",
                                     "http://127.0.0.1:/x", "http://127.0.0.1:80a/x",
                                     "http://127.0.0.1/a b"};
        for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
            struct vlm_err err;
            CHECK_EQ(get(urls[i], NULL, 0, 1 << 20, 5, 3, NULL, &err), VLM_EINVAL);
            CHECK_EQ(err.http_status, 400);
        }
    }

    struct canned k = {0};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int sp[2];
    k.lfd = socket(AF_INET, SOCK_STREAM, 0);
    VLM_ASSERT(k.lfd >= 0 && !bind(k.lfd, (struct sockaddr *)&a, sizeof a) && !listen(k.lfd, 16) &&
               !getsockname(k.lfd, (struct sockaddr *)&a, &al) && !pipe(sp));
    k.port = ntohs(a.sin_port);
    k.stop_rd = sp[0];
    k.stop_wr = sp[1];
    pthread_t th;
    VLM_ASSERT(!pthread_create(&th, NULL, canned_main, &k));
    const char *allow[] = {"127.0.0.1/32"};
    char url[128];
#define URL(path) (snprintf(url, sizeof url, "http://127.0.0.1:%d%s", k.port, path), url)

    TEST("loopback server: plain, chunked, relative and absolute redirects") {
        static const char *paths[] = {"/ok", "/chunked", "/redir", "/redir-abs"};
        for (size_t i = 0; i < 4; i++) {
            struct strbuf b = {0};
            struct vlm_err err;
            CHECK_EQ(get(URL(paths[i]), allow, 1, 1 << 20, 10, 3, &b, &err), 0);
            CHECK(b.n == 11 && !memcmp(b.s, "hello media", 11));
            sb_free(&b);
        }
    }

    TEST("loopback server: redirect cap, loop, private hop, bad scheme, 404, byte cap, stall") {
        struct vlm_err err;
        CHECK_EQ(get(URL("/redir-abs"), allow, 1, 1 << 20, 10, 1, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "redirected more than 1") != NULL);
        CHECK_EQ(get(URL("/loop"), allow, 1, 1 << 20, 10, 3, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "redirected more than 3") != NULL);
        CHECK_EQ(get(URL("/to-private"), allow, 1, 1 << 20, 10, 3, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "10.9.8.7") != NULL);
        CHECK_EQ(get(URL("/to-ftp"), allow, 1, 1 << 20, 10, 3, NULL, &err), VLM_EINVAL);
        CHECK_EQ(get(URL("/missing"), allow, 1, 1 << 20, 10, 3, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "HTTP 404") != NULL);
        CHECK_EQ(get(URL("/big"), allow, 1, 1024, 10, 3, NULL, &err), VLM_ETOOBIG);
        CHECK_EQ(get(URL("/stall"), allow, 1, 1 << 20, 0.2, 3, NULL, &err), VLM_EIO);
        CHECK(strstr(err.msg, "timed out") != NULL);
        /* without the allow list, loopback is refused */
        CHECK_EQ(get(URL("/ok"), NULL, 0, 1 << 20, 10, 3, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "private") != NULL);
    }

    TEST("loopback server: the low-speed cut-off ends a stalled transfer before the deadline") {
        struct vlm_err err;
        uint64_t t0 = vlm_now_ns();
        CHECK_EQ(get(URL("/stall"), allow, 1, 1 << 20, 60, 3, NULL, &err), VLM_EIO);
        double s = (double)(vlm_now_ns() - t0) / 1e9;
        CHECK(strstr(err.msg, "too slow") != NULL);
        CHECK(s >= FETCH_LOW_SPEED_S - 0.5 && s < 50); /* cut by the speed rule, not at 60 s */
    }

    TEST("after fetch_cancel_all every fetch fails as timed out") {
        struct vlm_err err;
        fetch_cancel_all();
        CHECK_EQ(get(URL("/ok"), allow, 1, 1 << 20, 10, 3, NULL, &err), VLM_EIO);
        CHECK(strstr(err.msg, "timed out") != NULL);
    }

    VLM_ASSERT(write(k.stop_wr, "x", 1) == 1);
    pthread_join(th, NULL);
    close(k.lfd);
    close(sp[0]);
    close(sp[1]);
    return test_report();
}
