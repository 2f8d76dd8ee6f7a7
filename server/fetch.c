/*
 * fetch.c: a minimal HTTP/1.1 GET client for media URLs. See fetch.h.
 */
#include "server/fetch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libavformat/avio.h>
#include <libavutil/dict.h>
#include <libavutil/error.h>
#include <libavutil/mem.h>
#include <libavutil/opt.h>

/* ==== URLs ==== */

struct url {
    char host[256];
    char port[8];
    char path[2048];
};

static int parse_url(const char *s, struct url *u, struct vlm_err *err)
{
    memset(u, 0, sizeof *u);
    bool tls = !strncasecmp(s, "https://", 8);
    if (!tls && strncasecmp(s, "http://", 7))
        return vlm_err_set(err, VLM_EINVAL, 400, "unsupported URL scheme (data:, http:, https:)");
    const char *h = s + (tls ? 8 : 7), *end = h + strcspn(h, "/?#");
    const char *at = memchr(h, '@', (size_t)(end - h));
    if (at) return vlm_err_set(err, VLM_EINVAL, 400, "URLs with credentials are refused");
    const char *hend, *colon;
    if (*h == '[') {
        hend = memchr(h, ']', (size_t)(end - h));
        if (!hend) return vlm_err_set(err, VLM_EINVAL, 400, "malformed URL host");
        colon = hend + 1 < end && hend[1] == ':' ? hend + 1 : NULL;
        h++;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        hend = colon ? colon : end;
    }
    size_t hn = (size_t)(hend - h);
    if (hn == 0 || hn >= sizeof u->host)
        return vlm_err_set(err, VLM_EINVAL, 400, "malformed URL host");
    memcpy(u->host, h, hn);
    if (colon) {
        size_t pn = (size_t)(end - colon - 1);
        if (pn == 0 || pn >= sizeof u->port)
            return vlm_err_set(err, VLM_EINVAL, 400, "malformed URL port");
        memcpy(u->port, colon + 1, pn);
        for (size_t i = 0; i < pn; i++)
            if (!isdigit((unsigned char)u->port[i]))
                return vlm_err_set(err, VLM_EINVAL, 400, "malformed URL port");
    } else {
        strcpy(u->port, tls ? "443" : "80");
    }
    const char *p = *end == '/' ? end : "/";
    size_t pl = strcspn(p, "#");
    if (*end == '?') {  /* "http://host?x" */
        if (strlen(end) + 2 >= sizeof u->path)
            return vlm_err_set(err, VLM_EINVAL, 400, "URL too long");
        snprintf(u->path, sizeof u->path, "/%.*s", (int)strcspn(end, "#"), end);
        return 0;
    }
    if (pl >= sizeof u->path) return vlm_err_set(err, VLM_EINVAL, 400, "URL too long");
    memcpy(u->path, p, pl);
    for (size_t i = 0; i < pl; i++)
        if ((unsigned char)u->path[i] <= ' ')
            return vlm_err_set(err, VLM_EINVAL, 400, "URL path holds spaces or control bytes");
    return 0;
}

/* ==== Address policy ==== */

static bool v4_private(uint32_t a) /* host order */
{
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 || (a >> 16) == 0xa9fe ||
           (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || (a >> 22) == (100u << 2 | 1) ||
           (a >> 28) >= 0xe;
}

static bool addr_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_private(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b}; /* 64:ff9b::/96 */
        uint32_t v;
        memcpy(&v, a->s6_addr + 12, 4);
        /* an IPv4 address inside IPv6 (mapped ::ffff:a.b.c.d, NAT64) is judged as IPv4 */
        if (IN6_IS_ADDR_V4MAPPED(a) || !memcmp(a->s6_addr, nat64, 12)) return v4_private(ntohl(v));
        return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LINKLOCAL(a) ||
               IN6_IS_ADDR_SITELOCAL(a) || IN6_IS_ADDR_MULTICAST(a) || IN6_IS_ADDR_V4COMPAT(a) ||
               (a->s6_addr[0] & 0xfe) == 0xfc;
    }
    return true;
}

/* addr matches "a.b.c.d", "a.b.c.d/n", "::1", "fc00::/7" */
static bool cidr_match(const char *addr, const char *entry)
{
    char net[64];
    const char *slash = strchr(entry, '/');
    size_t nl = slash ? (size_t)(slash - entry) : strlen(entry);
    if (nl >= sizeof net) return false;
    memcpy(net, entry, nl);
    net[nl] = 0;
    unsigned char a[16], b[16];
    int fam = strchr(net, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, addr, a) != 1 || inet_pton(fam, net, b) != 1) return false;
    int bits = fam == AF_INET ? 32 : 128;
    if (slash) {
        char *e;
        long v = strtol(slash + 1, &e, 10);
        if (*e || v < 0 || v > bits) return false;
        bits = (int)v;
    }
    for (int i = 0; i < bits; i++) {
        int m = 0x80 >> (i & 7);
        if ((a[i >> 3] & m) != (b[i >> 3] & m)) return false;
    }
    return true;
}

bool fetch_addr_allowed(const char *addr, const char *const *allow, int32_t n_allow)
{
    for (int32_t i = 0; i < n_allow; i++)
        if (cidr_match(addr, allow[i])) return true;
    return false;
}

static bool host_allowed(const char *host, const char *const *allow, int32_t n_allow)
{
    for (int32_t i = 0; i < n_allow; i++)
        if (!strcasecmp(host, allow[i])) return true;
    return false;
}

/* ==== Socket I/O with a deadline ====
 * Every wait is cut into slices of at most FETCH_POLL_MS, so that fetch_cancel_all() is
 * seen within one slice: a cancelled fetch ends as one past its deadline. */

#define FETCH_POLL_MS 100

static atomic_bool fetch_cancelled;

void fetch_cancel_all(void)
{
    atomic_store(&fetch_cancelled, true);
}

/* Milliseconds to wait before looking again; 0 once the deadline passed or fetches were
 * cancelled. */
static int poll_slice(uint64_t deadline)
{
    uint64_t now = vlm_now_ns();
    if (now >= deadline || atomic_load(&fetch_cancelled)) return 0;
    return (int)VLM_MIN((deadline - now) / 1000000 + 1, (uint64_t)FETCH_POLL_MS);
}

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        int ms = poll_slice(deadline);
        if (!ms) return VLM_EIO;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, ms);
        if (r > 0) return 0;
        if (r == 0) continue;
        if (r < 0 && errno != EINTR) return VLM_EIO;
    }
}

/* Resolves u's host and refuses it when an address is private (see fetch.h). On success
 * *res (if res != NULL) holds the addresses (freeaddrinfo). */
static int check_host(const struct url *u, const struct fetch_limits *lim, struct addrinfo **res_out,
                      struct vlm_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g) return vlm_err_set(err, VLM_EIO, 400, "cannot resolve media host '%.100s'", u->host);
    bool host_ok = host_allowed(u->host, lim->allow, lim->n_allow);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char txt[INET6_ADDRSTRLEN] = "";
        const void *ap = ai->ai_family == AF_INET
                             ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                             : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, ap, txt, sizeof txt);
        if (addr_private(ai->ai_addr) && !host_ok &&
            !fetch_addr_allowed(txt, lim->allow, lim->n_allow)) {
            freeaddrinfo(res);
            return vlm_err_set(err, VLM_EINVAL, 400,
                               "media URL host '%.100s' resolves to a private or loopback "
                               "address (%s); add it to --fetch-allow to permit it",
                               u->host, txt);
        }
    }
    if (res_out) *res_out = res;
    else freeaddrinfo(res);
    return 0;
}

static int connect_to(const struct url *u, const struct fetch_limits *lim, uint64_t deadline,
                      int *fd_out, struct vlm_err *err)
{
    struct addrinfo *res = NULL;
    int rc = check_host(u, lim, &res, err);
    if (rc) return rc;
    rc = vlm_err_set(err, VLM_EIO, 400, "cannot connect to media host '%.100s'", u->host);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) continue;
        int c = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (c < 0 && errno == EINPROGRESS) {
            if (wait_fd(fd, POLLOUT, deadline) == 0) {
                int so = 0;
                socklen_t sl = sizeof so;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
                c = so ? -1 : 0;
            } else {
                rc = vlm_err_set(err, VLM_EIO, 400, "timed out connecting to media host '%.100s'",
                                 u->host);
            }
        }
        if (c == 0) {
            *fd_out = fd;
            rc = 0;
            break;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static int send_all(int fd, const char *s, size_t n, uint64_t deadline, struct vlm_err *err)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline))
                return vlm_err_set(err, VLM_EIO, 400, "timed out sending the media request");
        } else {
            return vlm_err_set(err, VLM_EIO, 400, "media request failed: %s", strerror(errno));
        }
    }
    return 0;
}

/* Reads until EOF into b, at most cap bytes. */
static int recv_all(int fd, struct strbuf *b, size_t cap, uint64_t deadline, double timeout_s,
                    struct vlm_err *err)
{
    char buf[16384];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
            if (b->n + (size_t)r > cap)
                return vlm_err_set(err, VLM_ETOOBIG, 400,
                                   "media download larger than the limit (%zu bytes)", cap);
            sb_append(b, buf, (size_t)r);
        } else if (r == 0) {
            return 0;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline))
                return vlm_err_set(err, VLM_EIO, 400, "media fetch timed out after %g s",
                                   timeout_s);
        } else {
            return vlm_err_set(err, VLM_EIO, 400, "media fetch failed: %s", strerror(errno));
        }
    }
}

/* ==== Responses ==== */

static const char *header_value(const char *hdrs, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = hdrs, *end = hdrs + n;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static int dechunk(const char *s, size_t n, struct strbuf *out, struct vlm_err *err)
{
    size_t i = 0;
    for (;;) {
        char *e;
        if (i >= n) break;
        unsigned long len = strtoul(s + i, &e, 16);
        const char *eol = memmem(s + i, n - i, "\r\n", 2);
        if (!eol || e == s + i) break;
        i = (size_t)(eol - s) + 2;
        if (len == 0) return 0;
        if (len > n - i) break;
        sb_append(out, s + i, len);
        i += len + 2;
    }
    return vlm_err_set(err, VLM_EIO, 400, "malformed chunked body from the media host");
}

/* ==== https: libavformat's https protocol behind a checking CONNECT proxy ====
 * FFmpeg does TLS (certificates verified against the system CA bundle or ca_file, SNI and
 * host name from the URL), HTTP and redirects; only https/tls/tcp/httpproxy may be opened,
 * so a redirect to another scheme fails. Its TCP connections, though, all go through a
 * one-request CONNECT proxy on 127.0.0.1 run by a thread of this file: for every
 * "CONNECT host:port" (the first hop and each redirect) the proxy resolves the host, applies
 * the address policy (check_host) and connects to exactly the addresses it checked
 * (connect_to), then relays bytes. So https gets the same guarantees as http: every hop
 * checked, no second resolution. FFmpeg bypasses a proxy for hosts matched by the
 * environment's no_proxy list; such hosts are refused before FFmpeg is called. */

struct tunnel {
    const struct fetch_limits *lim;
    uint64_t deadline;
    int lfd;              /* listening socket, 127.0.0.1:port */
    int stop_rd, stop_wr; /* a byte on stop_wr ends the proxy thread */
    int hops;             /* CONNECTs seen */
    bool refused;         /* a hop failed the policy or could not connect: err holds why */
    struct vlm_err err;
};

/* Reads a CONNECT request head from fd; 0 with u filled, or <0. */
static int tunnel_read_connect(struct tunnel *t, int fd, struct url *u)
{
    char head[2048];
    size_t n = 0;
    while (n < sizeof head - 1) {
        if (wait_fd(fd, POLLIN, t->deadline)) return -1;
        ssize_t r = recv(fd, head + n, sizeof head - 1 - n, 0);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            return -1;
        }
        n += (size_t)r;
        head[n] = 0;
        if (strstr(head, "\r\n\r\n")) break;
    }
    char target[300];
    if (sscanf(head, "CONNECT %299s HTTP/1.%*d", target) != 1) return -1;
    char full[320];
    snprintf(full, sizeof full, "https://%s/", target);
    struct vlm_err scratch = {0};
    return parse_url(full, u, &scratch) ? -1 : 0;
}

/* Copies bytes both ways until one side closes, the deadline passes, a new client arrives
 * on the listening socket, or stop is signalled. */
static void tunnel_relay(struct tunnel *t, int a, int b)
{
    char buf[16384];
    for (;;) {
        int ms = poll_slice(t->deadline);
        if (!ms) return;
        struct pollfd p[4] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN},
                              {.fd = t->lfd, .events = POLLIN},
                              {.fd = t->stop_rd, .events = POLLIN}};
        int r = poll(p, 4, ms);
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        if (r < 0 || p[2].revents || p[3].revents) return;
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents) continue;
            int from = i ? b : a, to = i ? a : b;
            ssize_t k = recv(from, buf, sizeof buf, 0);
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (k <= 0) return;
            for (ssize_t off = 0; off < k;) {
                ssize_t w = send(to, buf + off, (size_t)(k - off), MSG_NOSIGNAL);
                if (w > 0) off += w;
                else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                    if (wait_fd(to, POLLOUT, t->deadline)) return;
                } else {
                    return;
                }
            }
        }
    }
}

static void *tunnel_main(void *arg)
{
    struct tunnel *t = arg;
    for (;;) {
        int ms = poll_slice(t->deadline);
        if (!ms) break;
        struct pollfd p[2] = {{.fd = t->lfd, .events = POLLIN},
                              {.fd = t->stop_rd, .events = POLLIN}};
        int r = poll(p, 2, ms);
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        if (r < 0 || p[1].revents) break;
        int c = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) continue;
        struct url u;
        int up = -1;
        if (tunnel_read_connect(t, c, &u) == 0) {
            t->hops++;
            struct vlm_err e = {0};
            if (connect_to(&u, t->lim, t->deadline, &up, &e) == 0) {
                static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
                if (send_all(c, ok, sizeof ok - 1, t->deadline, &e) == 0) tunnel_relay(t, c, up);
                close(up);
            } else if (!t->refused) {
                t->refused = true;
                t->err = e;
                static const char no[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
                send_all(c, no, sizeof no - 1, t->deadline, &e);
            }
        }
        close(c);
    }
    return NULL;
}

/* Starts the proxy thread; *proxy_url gets "http://127.0.0.1:port". */
static int tunnel_start(struct tunnel *t, pthread_t *th, char *proxy_url, size_t n,
                        struct vlm_err *err)
{
    int sp[2] = {-1, -1};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t->lfd < 0 || bind(t->lfd, (struct sockaddr *)&a, sizeof a) || listen(t->lfd, 4) ||
        getsockname(t->lfd, (struct sockaddr *)&a, &al) || pipe2(sp, O_CLOEXEC)) {
        if (t->lfd >= 0) close(t->lfd);
        return vlm_err_set(err, VLM_EIO, 503, "cannot start the https fetch tunnel: %s",
                           strerror(errno));
    }
    t->stop_rd = sp[0];
    t->stop_wr = sp[1];
    if (pthread_create(th, NULL, tunnel_main, t)) {
        close(t->lfd);
        close(sp[0]);
        close(sp[1]);
        return vlm_err_set(err, VLM_EIO, 503, "cannot start the https fetch tunnel");
    }
    snprintf(proxy_url, n, "http://127.0.0.1:%d", (int)ntohs(a.sin_port));
    return 0;
}

static void tunnel_stop(struct tunnel *t, pthread_t th)
{
    ssize_t w;
    do w = write(t->stop_wr, "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(th, NULL);
    close(t->lfd);
    close(t->stop_rd);
    close(t->stop_wr);
}

/* Whether FFmpeg would bypass the proxy for host: a conservative reading of its no_proxy
 * rules (any entry that is "*" or a suffix of the host counts). */
static bool no_proxy_matches(const char *host)
{
    const char *env = getenv("no_proxy");
    if (!env || !env[0]) return false;
    size_t hl = strlen(host);
    for (const char *p = env; *p;) {
        p += strspn(p, ", ");
        size_t n = strcspn(p, ", ");
        if (!n) break;
        const char *e = p;
        size_t en = n;
        while (en && *e == '.') e++, en--;
        if ((n == 1 && *p == '*') || (en && en <= hl && !strncasecmp(host + hl - en, e, en)))
            return true;
        p += n;
    }
    return false;
}

static int av_deadline_passed(void *opaque)
{
    return vlm_now_ns() > *(const uint64_t *)opaque || atomic_load(&fetch_cancelled);
}

static int fetch_https(const char *url, const struct url *u, const struct fetch_limits *lim,
                       uint64_t deadline, struct strbuf *body, struct vlm_err *err)
{
    if (no_proxy_matches(u->host))
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "https media host '%.100s' matches the server's no_proxy setting, "
                           "which would skip the address checks; refused", u->host);
    struct tunnel t = {.lim = lim, .deadline = deadline};
    pthread_t th;
    char proxy[64];
    int rc = tunnel_start(&t, &th, proxy, sizeof proxy, err);
    if (rc) return rc;

    AVDictionary *opt = NULL;
    char tmo[32], redirs[16];
    snprintf(tmo, sizeof tmo, "%lld", (long long)(lim->timeout_s * 1e6));
    snprintf(redirs, sizeof redirs, "%d", (int)VLM_MAX(lim->max_redirects, 0));
    av_dict_set(&opt, "rw_timeout", tmo, 0);
    av_dict_set(&opt, "timeout", tmo, 0);
    av_dict_set(&opt, "tls_verify", "1", 0);
    if (lim->ca_file) av_dict_set(&opt, "ca_file", lim->ca_file, 0);
    else if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0)
        av_dict_set(&opt, "ca_file", "/etc/ssl/certs/ca-certificates.crt", 0);
    av_dict_set(&opt, "user_agent", "valley-server", 0);
    av_dict_set(&opt, "seekable", "0", 0);
    av_dict_set(&opt, "reconnect", "0", 0);
    av_dict_set(&opt, "max_redirects", redirs, 0);
    av_dict_set(&opt, "http_proxy", proxy, 0);
    av_dict_set(&opt, "protocol_whitelist", "https,tls,httpproxy,tcp", 0);
    AVIOInterruptCB cb = {av_deadline_passed, &deadline};
    AVIOContext *pb = NULL;
    int r = avio_open2(&pb, url, AVIO_FLAG_READ, &cb, &opt);
    av_dict_free(&opt);
    size_t cap = (size_t)lim->max_bytes;
    uint8_t buf[16384];
    while (r >= 0) {
        int k = avio_read(pb, buf, sizeof buf);
        if (k == AVERROR_EOF || k == 0) break;
        if (k < 0) {
            r = k;
            break;
        }
        if (body->n + (size_t)k > cap) {
            rc = vlm_err_set(err, VLM_ETOOBIG, 400,
                             "media download larger than the limit (%zu bytes)", cap);
            break;
        }
        sb_append(body, (const char *)buf, (size_t)k);
    }
    avio_closep(&pb);
    tunnel_stop(&t, th);
    if (rc) return rc;
    if (t.refused) { /* the proxy's reason beats FFmpeg's generic I/O error */
        if (err) *err = t.err;
        return t.err.code ? t.err.code : VLM_EINVAL;
    }
    if (r >= 0) return 0;
    if (vlm_now_ns() > deadline)
        return vlm_err_set(err, VLM_EIO, 400, "media fetch timed out after %g s", lim->timeout_s);
    if (r == AVERROR_HTTP_BAD_REQUEST || r == AVERROR_HTTP_UNAUTHORIZED ||
        r == AVERROR_HTTP_FORBIDDEN || r == AVERROR_HTTP_NOT_FOUND ||
        r == AVERROR_HTTP_OTHER_4XX || r == AVERROR_HTTP_SERVER_ERROR)
        return vlm_err_set(err, VLM_EINVAL, 400, "fetching the media URL failed: %s",
                           av_err2str(r));
    if (r == AVERROR(EIO) && t.hops == lim->max_redirects + 1)
        return vlm_err_set(err, VLM_EIO, 400,
                           "cannot fetch the media URL: I/O error, or more than %d redirects",
                           lim->max_redirects);
    return vlm_err_set(err, VLM_EIO, 400, "cannot fetch the media URL: %s", av_err2str(r));
}

int fetch_parse_response(const char *raw, size_t n, size_t cap, int *status, char *loc,
                         size_t loc_cap, struct strbuf *body, struct vlm_err *err)
{
    const char *hend = memmem(raw, n, "\r\n\r\n", 4);
    *status = 0;
    if (loc_cap) loc[0] = 0;
    if (!hend || sscanf(raw, "HTTP/%*d.%*d %d", status) != 1 || *status < 100 || *status > 999)
        return vlm_err_set(err, VLM_EIO, 400, "malformed HTTP response from the media host");
    size_t hlen = (size_t)(hend - raw) + 2, vlen = 0;
    const char *b = hend + 4;
    size_t blen = n - (size_t)(b - raw);
    if (*status >= 300 && *status < 400) {
        const char *l = header_value(raw, hlen, "Location", &vlen);
        if (!l || vlen == 0 || vlen >= loc_cap)
            return vlm_err_set(err, VLM_EINVAL, 400, "media host redirected without Location");
        memcpy(loc, l, vlen);
        loc[vlen] = 0;
        return 0;
    }
    if (*status < 200 || *status >= 300)
        return vlm_err_set(err, VLM_EINVAL, 400, "fetching the media URL failed: HTTP %d",
                           *status);
    int rc = 0;
    const char *te = header_value(raw, hlen, "Transfer-Encoding", &vlen);
    if (te && vlen >= 7 && !strncasecmp(te, "chunked", 7)) {
        rc = dechunk(b, blen, body, err);
    } else {
        const char *cl = header_value(raw, hlen, "Content-Length", &vlen);
        size_t want = blen;
        if (cl) {
            want = (size_t)strtoull(cl, NULL, 10);
            if (want > blen) rc = vlm_err_set(err, VLM_EIO, 400, "media download truncated");
        }
        if (!rc) sb_append(body, b, VLM_MIN(want, blen));
    }
    if (!rc && body->n > cap)
        rc = vlm_err_set(err, VLM_ETOOBIG, 400,
                         "media download larger than the limit (%zu bytes)", cap);
    if (!rc && body->n == 0) rc = vlm_err_set(err, VLM_EINVAL, 400, "empty media download");
    if (rc) sb_free(body);
    return rc;
}

int fetch_url(const char *url, const struct fetch_limits *lim, uint8_t **out, size_t *n,
              struct vlm_err *err)
{
    if (!strncasecmp(url, "https://", 8)) {
        *out = NULL;
        *n = 0;
        struct url u;
        int rc = parse_url(url, &u, err);
        if (!rc) rc = check_host(&u, lim, NULL, err);
        struct strbuf body = {0};
        if (!rc) rc = fetch_https(url, &u, lim, vlm_now_ns() + (uint64_t)(lim->timeout_s * 1e9),
                                  &body, err);
        if (!rc && body.n == 0) rc = vlm_err_set(err, VLM_EINVAL, 400, "empty media download");
        if (rc) {
            sb_free(&body);
            return rc;
        }
        *out = (uint8_t *)body.s;
        *n = body.n;
        return 0;
    }

    *out = NULL;
    *n = 0;
    uint64_t deadline = vlm_now_ns() + (uint64_t)(lim->timeout_s * 1e9);
    char cur[2300];
    if (strlen(url) >= sizeof cur) return vlm_err_set(err, VLM_EINVAL, 400, "URL too long");
    strcpy(cur, url);
    size_t cap = (size_t)lim->max_bytes;
    size_t raw_cap = cap + cap / 8 + 65536; /* headers and chunk framing */
    for (int hop = 0;; hop++) {
        if (!strncasecmp(cur, "https://", 8)) { /* redirected to https */
            struct fetch_limits rest = *lim;
            uint64_t now = vlm_now_ns();
            rest.max_redirects = lim->max_redirects - hop;
            rest.timeout_s = now < deadline ? (double)(deadline - now) / 1e9 : 0;
            return fetch_url(cur, &rest, out, n, err);
        }
        struct url u;
        int rc = parse_url(cur, &u, err);
        if (rc) return rc;
        int fd = -1;
        if ((rc = connect_to(&u, lim, deadline, &fd, err))) return rc;
        struct strbuf req = {0}, raw = {0};
        sb_printf(&req,
                  "GET %s HTTP/1.1\r\nHost: %s%s%s\r\nUser-Agent: valley-server\r\n"
                  "Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
                  u.path, u.host, strcmp(u.port, "80") ? ":" : "",
                  strcmp(u.port, "80") ? u.port : "");
        rc = send_all(fd, req.s, req.n, deadline, err);
        if (!rc) rc = recv_all(fd, &raw, raw_cap, deadline, lim->timeout_s, err);
        close(fd);
        sb_free(&req);
        if (rc) {
            sb_free(&raw);
            return rc;
        }
        int status = 0;
        char loc[sizeof cur];
        struct strbuf bodybuf = {0};
        rc = fetch_parse_response(raw.s ? raw.s : "", raw.n, cap, &status, loc,
                                  sizeof cur - 300, &bodybuf, err);
        sb_free(&raw);
        if (rc) return rc;
        if (status >= 300 && status < 400) {
            if (hop + 1 > lim->max_redirects)
                return vlm_err_set(err, VLM_EINVAL, 400,
                                   "media URL redirected more than %d times", lim->max_redirects);
            char next[sizeof cur];
            int len;
            if (loc[0] == '/' && loc[1] != '/')
                len = snprintf(next, sizeof next, "http://%s%s%s%s%s",
                               strchr(u.host, ':') ? "[" : "", u.host,
                               strchr(u.host, ':') ? "]:" : ":", u.port, loc);
            else
                len = snprintf(next, sizeof next, "%s", loc);
            if (len < 0 || (size_t)len >= sizeof next)
                return vlm_err_set(err, VLM_EINVAL, 400, "media host redirected to a URL too long");
            strcpy(cur, next);
            continue;
        }
        *out = (uint8_t *)bodybuf.s;
        *n = bodybuf.n;
        return 0;
    }
}
