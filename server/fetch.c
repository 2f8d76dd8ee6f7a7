/*
 * fetch.c: media URLs through libcurl, under the address policy of fetch.h.
 *
 * Redirects are followed here, not by libcurl, so that every hop goes through the same
 * steps: parse the URL (parse_url), resolve and check its host (check_host), pin libcurl to
 * exactly the addresses checked (CURLOPT_RESOLVE), and let libcurl connect only to one of
 * them (opensocket_cb compares the address it is about to connect to with that list).
 */
#include "server/fetch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

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

/* ==== Cancellation ==== */

/* Every wait of a transfer is cut into slices of at most FETCH_POLL_MS, so that
 * fetch_cancel_all() is seen within one slice: a cancelled fetch ends as one past its
 * deadline. */
#define FETCH_POLL_MS 100

static atomic_bool fetch_cancelled;

void fetch_cancel_all(void)
{
    atomic_store(&fetch_cancelled, true);
}

/* ==== One hop: the checked addresses ==== */

#define FETCH_MAX_ADDRS 16

struct hop {
    struct url u;
    struct sockaddr_storage addr[FETCH_MAX_ADDRS]; /* what check_host vetted, port included */
    int n_addr;
    bool literal;              /* the host is an IP address: libcurl does not resolve it */
    char refused[INET6_ADDRSTRLEN + 8]; /* an address libcurl wanted that is not in addr[] */
};

static void addr_text(const struct sockaddr *sa, char *txt, size_t n)
{
    const void *ap = sa->sa_family == AF_INET
                         ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                         : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!inet_ntop(sa->sa_family, ap, txt, (socklen_t)n)) snprintf(txt, n, "?");
}

/* Resolves the hop's host and refuses it when an address is private (see fetch.h); on
 * success the addresses are kept in h->addr. */
static int check_host(struct hop *h, const struct fetch_limits *lim, struct vlm_err *err)
{
    const struct url *u = &h->u;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    unsigned char lit[16];
    h->literal = inet_pton(AF_INET, u->host, lit) == 1 || inet_pton(AF_INET6, u->host, lit) == 1;
    h->n_addr = 0;
    if (getaddrinfo(u->host, u->port, &hints, &res))
        return vlm_err_set(err, VLM_EIO, 400, "cannot resolve media host '%.100s'", u->host);
    bool host_ok = host_allowed(u->host, lim->allow, lim->n_allow);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        char txt[INET6_ADDRSTRLEN];
        addr_text(ai->ai_addr, txt, sizeof txt);
        if (addr_private(ai->ai_addr) && !host_ok &&
            !fetch_addr_allowed(txt, lim->allow, lim->n_allow)) {
            freeaddrinfo(res);
            return vlm_err_set(err, VLM_EINVAL, 400,
                               "media URL host '%.100s' resolves to a private or loopback "
                               "address (%s); add it to --fetch-allow to permit it",
                               u->host, txt);
        }
        if (h->n_addr < FETCH_MAX_ADDRS && ai->ai_addrlen <= sizeof h->addr[0])
            memcpy(&h->addr[h->n_addr++], ai->ai_addr, ai->ai_addrlen);
    }
    freeaddrinfo(res);
    if (!h->n_addr)
        return vlm_err_set(err, VLM_EIO, 400, "cannot resolve media host '%.100s'", u->host);
    return 0;
}

static bool same_endpoint(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family) return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

/* libcurl's socket for a connection: opened only when the address it is about to connect to
 * is one that check_host vetted for this hop. */
static curl_socket_t opensocket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct hop *h = arg;
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    for (int i = 0; i < h->n_addr; i++)
        if (same_endpoint(&a->addr, &h->addr[i]))
            return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (a->family == AF_INET || a->family == AF_INET6)
        addr_text(&a->addr, h->refused, sizeof h->refused);
    else
        snprintf(h->refused, sizeof h->refused, "family %d", a->family);
    return CURL_SOCKET_BAD;
}

/* "host:port:addr,addr" for CURLOPT_RESOLVE (IPv6 addresses in brackets). */
static struct curl_slist *pin_list(const struct hop *h)
{
    if (h->literal) return NULL;
    struct strbuf s = {0};
    sb_printf(&s, "%s:%s:", h->u.host, h->u.port);
    for (int i = 0; i < h->n_addr; i++) {
        char txt[INET6_ADDRSTRLEN];
        addr_text((const struct sockaddr *)&h->addr[i], txt, sizeof txt);
        bool v6 = h->addr[i].ss_family == AF_INET6;
        sb_printf(&s, "%s%s%s%s", i ? "," : "", v6 ? "[" : "", txt, v6 ? "]" : "");
    }
    struct curl_slist *l = curl_slist_append(NULL, s.s);
    sb_free(&s);
    return l;
}

/* ==== The transfer ==== */

struct sink {
    CURL *easy;
    struct strbuf body;
    size_t cap;
    bool over;    /* the body passed cap */
    bool skipped; /* not a 2xx: the body is not wanted, the transfer was stopped */
};

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    struct sink *k = arg;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        k->skipped = true;
        return 0;
    }
    if (n > k->cap - k->body.n) {
        k->over = true;
        return 0;
    }
    sb_append(&k->body, p, n);
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Runs the easy handle to its end in slices of FETCH_POLL_MS. *cut: stopped here because
 * the deadline passed or fetches were cancelled. */
static CURLcode run_transfer(CURLM *m, CURL *e, uint64_t deadline, bool *cut)
{
    CURLcode res = CURLE_FAILED_INIT;
    *cut = false;
    if (curl_multi_add_handle(m, e) != CURLM_OK) return res;
    for (int running = 1;;) {
        if (curl_multi_perform(m, &running) != CURLM_OK) break;
        if (!running) break;
        if (vlm_now_ns() >= deadline || atomic_load(&fetch_cancelled)) {
            *cut = true;
            break;
        }
        curl_multi_poll(m, NULL, 0, FETCH_POLL_MS, NULL);
    }
    int left;
    for (CURLMsg *msg; (msg = curl_multi_info_read(m, &left));)
        if (msg->msg == CURLMSG_DONE) res = msg->data.result;
    curl_multi_remove_handle(m, e);
    return res;
}

/* The error for a transfer that did not end with CURLE_OK. */
static int transfer_error(CURLcode res, const struct hop *h, const struct sink *k,
                          const struct fetch_limits *lim, uint64_t start, uint64_t deadline,
                          const char *detail, struct vlm_err *err)
{
    if (h->refused[0])
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "media URL host '%.100s': refused a connection to %s, an address "
                           "that was not checked", h->u.host, h->refused);
    if (k->over || res == CURLE_FILESIZE_EXCEEDED)
        return vlm_err_set(err, VLM_ETOOBIG, 400,
                           "media download larger than the limit (%zu bytes)", k->cap);
    if (res == CURLE_OPERATION_TIMEDOUT && vlm_now_ns() + 50000000 < deadline)
        return vlm_err_set(err, VLM_EIO, 400,
                           "media host too slow: under %d bytes/s for %d s (timed out after "
                           "%.1f s)", FETCH_LOW_SPEED_BYTES, FETCH_LOW_SPEED_S,
                           (double)(vlm_now_ns() - start) / 1e9);
    if (res == CURLE_OPERATION_TIMEDOUT || res == CURLE_ABORTED_BY_CALLBACK)
        return vlm_err_set(err, VLM_EIO, 400, "media fetch timed out after %g s", lim->timeout_s);
    if (res == CURLE_COULDNT_CONNECT)
        return vlm_err_set(err, VLM_EIO, 400, "cannot connect to media host '%.100s'",
                           h->u.host);
    if (res == CURLE_PARTIAL_FILE)
        return vlm_err_set(err, VLM_EIO, 400, "media download truncated");
    if (res == CURLE_PEER_FAILED_VERIFICATION || res == CURLE_SSL_CONNECT_ERROR ||
        res == CURLE_SSL_CACERT_BADFILE)
        return vlm_err_set(err, VLM_EIO, 400, "TLS with media host '%.100s' failed: %s",
                           h->u.host, detail[0] ? detail : curl_easy_strerror(res));
    return vlm_err_set(err, VLM_EIO, 400, "cannot fetch the media URL: %s",
                       detail[0] ? detail : curl_easy_strerror(res));
}

/* Sets the options every hop shares. */
static int setup_easy(CURL *e, const struct fetch_limits *lim, struct sink *k, struct hop *h,
                      char *errbuf)
{
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never a proxy from the environment */
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "valley-server");
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, k);
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, h);
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)k->cap);
    bad |= curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, (long)FETCH_LOW_SPEED_BYTES);
    bad |= curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)FETCH_LOW_SPEED_S);
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (lim->ca_file) bad |= curl_easy_setopt(e, CURLOPT_CAINFO, lim->ca_file);
    return bad;
}

int fetch_url(const char *url, const struct fetch_limits *lim, uint8_t **out, size_t *n,
              struct vlm_err *err)
{
    *out = NULL;
    *n = 0;
    uint64_t start = vlm_now_ns(), deadline = start + (uint64_t)(lim->timeout_s * 1e9);
    char cur[2300];
    if (strlen(url) >= sizeof cur) return vlm_err_set(err, VLM_EINVAL, 400, "URL too long");
    strcpy(cur, url);
    bool tls_first = !strncasecmp(url, "https://", 8);

    /* everything that needs no connection is refused before libcurl is set up */
    struct hop *h = calloc(1, sizeof *h);
    if (!h) return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory");
    int rc = parse_url(cur, &h->u, err);
    if (!rc) rc = check_host(h, lim, err);
    if (rc) {
        free(h);
        return rc;
    }
    pthread_once(&curl_once, curl_init);
    struct sink k = {.cap = (size_t)lim->max_bytes};
    CURLM *m = curl_init_rc == CURLE_OK ? curl_multi_init() : NULL;
    k.easy = m ? curl_easy_init() : NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    if (!k.easy || setup_easy(k.easy, lim, &k, h, errbuf)) {
        rc = vlm_err_set(err, VLM_ENOMEM, 503, "cannot set up the media fetch");
        goto done;
    }
    for (int hop = 0;; hop++) {
        if (atomic_load(&fetch_cancelled)) {
            rc = vlm_err_set(err, VLM_EIO, 400, "media fetch timed out after %g s",
                             lim->timeout_s);
            break;
        }
        if (hop) { /* a redirect: the new URL is parsed and checked like the first */
            struct url prev = h->u;
            memset(h, 0, sizeof *h);
            if ((rc = parse_url(cur, &h->u, err))) break;
            if (tls_first && strncasecmp(cur, "https://", 8)) {
                rc = vlm_err_set(err, VLM_EINVAL, 400,
                                 "media host '%.100s' redirected from https to another scheme "
                                 "(%.100s); refused", prev.host, cur);
                break;
            }
            if ((rc = check_host(h, lim, err))) break;
        }
        uint64_t now = vlm_now_ns();
        long left_ms = now < deadline ? (long)((deadline - now) / 1000000) + 1 : 1;
        struct curl_slist *pin = pin_list(h);
        errbuf[0] = 0;
        curl_easy_setopt(k.easy, CURLOPT_URL, cur);
        curl_easy_setopt(k.easy, CURLOPT_RESOLVE, pin);
        curl_easy_setopt(k.easy, CURLOPT_TIMEOUT_MS, left_ms);
        curl_easy_setopt(k.easy, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
        sb_free(&k.body);
        k.over = k.skipped = false;
        bool cut;
        CURLcode res = run_transfer(m, k.easy, deadline, &cut);
        curl_easy_setopt(k.easy, CURLOPT_RESOLVE, NULL);
        curl_slist_free_all(pin);
        if (cut) {
            rc = vlm_err_set(err, VLM_EIO, 400, "media fetch timed out after %g s",
                             lim->timeout_s);
            break;
        }
        if (res != CURLE_OK && !(res == CURLE_WRITE_ERROR && k.skipped && !k.over)) {
            rc = transfer_error(res, h, &k, lim, start, deadline, errbuf, err);
            break;
        }
        long status = 0;
        curl_easy_getinfo(k.easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300 && status < 400) {
            char *loc = NULL;
            curl_easy_getinfo(k.easy, CURLINFO_REDIRECT_URL, &loc);
            if (!loc || !loc[0]) {
                rc = vlm_err_set(err, VLM_EINVAL, 400, "media host redirected without Location");
                break;
            }
            if (hop + 1 > lim->max_redirects) {
                rc = vlm_err_set(err, VLM_EINVAL, 400,
                                 "media URL redirected more than %d times (too many redirects)",
                                 lim->max_redirects);
                break;
            }
            if (strlen(loc) >= sizeof cur) {
                rc = vlm_err_set(err, VLM_EINVAL, 400, "media host redirected to a URL too long");
                break;
            }
            strcpy(cur, loc);
            continue;
        }
        if (status < 200 || status >= 300) {
            rc = vlm_err_set(err, VLM_EINVAL, 400, "fetching the media URL failed: HTTP %ld",
                             status);
            break;
        }
        if (!k.body.n) {
            rc = vlm_err_set(err, VLM_EINVAL, 400, "empty media download");
            break;
        }
        *out = (uint8_t *)k.body.s;
        *n = k.body.n;
        k.body = (struct strbuf){0};
        rc = 0;
        break;
    }
done:
    sb_free(&k.body);
    if (k.easy) curl_easy_cleanup(k.easy);
    if (m) curl_multi_cleanup(m);
    free(h);
    return rc;
}
