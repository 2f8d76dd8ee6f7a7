/*
 * fetch: downloads one media URL for a request, with caps on bytes, time and redirects.
 *
 * http:// is a minimal HTTP/1.1 GET client over a non-blocking socket with poll() deadlines
 * (Content-Length and chunked bodies, 3xx redirects re-checked hop by hop). https:// goes
 * through libavformat's https protocol (already linked for video; libcurl is not a
 * dependency): certificates verified (system CA bundle or ca_file), only https/tls/tcp/
 * httpproxy allowed, the transfer bounded by an interrupt deadline, and every TCP connection
 * FFmpeg makes (first hop and redirects) tunnelled through a CONNECT proxy thread of
 * fetch.c on 127.0.0.1 that applies the same address policy.
 *
 * SSRF guard: every hop's host is resolved first and refused (400) when any address is
 * loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16,
 * fe80::/10), CGNAT (100.64/10), unspecified (0/8, ::), multicast or reserved (224/3), unless
 * the host name or the address matches an entry of the allow list (exact host name,
 * IPv4/IPv6 address, or CIDR "10.0.0.0/8"). The socket then connects to exactly the
 * addresses that were checked (no second lookup, so DNS rebinding cannot slip in), for http
 * and https alike.
 *
 * Called by the workers (workers.h): blocking is fine there, never on the HTTP or engine thread.
 * Thread-safe.
 */
#ifndef VLM_FETCH_H
#define VLM_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"

struct fetch_limits {
    double timeout_s;          /* whole transfer including redirects */
    int64_t max_bytes;         /* body size cap */
    int32_t max_redirects;
    const char *const *allow;  /* borrowed, (n_allow) host names / addresses / CIDRs */
    int32_t n_allow;
    const char *ca_file;       /* borrowed; PEM CA bundle for https, NULL: the system's */
};

/* GETs url. On success *out (malloc'ed, owned by the caller) holds *n body bytes. Errors
 * (all with err filled, http_status 400 unless noted): VLM_EINVAL (bad or unsupported URL,
 * refused address, HTTP status >= 400 from the origin, too many redirects), VLM_EIO
 * (connection failure, timeout), VLM_ETOOBIG (over max_bytes), VLM_ENOMEM (503). */
int fetch_url(const char *url, const struct fetch_limits *lim, uint8_t **out, size_t *n,
              struct vlm_err *err);

/* Makes every fetch under way, and every later one, fail within a tenth of a second as if
 * its deadline had passed (the server's shutdown). Any thread; there is no undoing it. */
void fetch_cancel_all(void);

/* Whether a numeric address (text) matches an allow-list entry (address or CIDR); exposed
 * for tests. */
/* Parses one complete HTTP/1.1 response as received (raw[0..n), NUL-terminated at raw[n]).
 * 0 with *status set and, for 3xx, the Location in loc (loc_cap bytes); for 2xx the body
 * (chunked decoded, Content-Length honoured, at most cap bytes) appended to *body. Any other
 * status, a malformed head or body, or a body over cap: an error for the user (400). */
int fetch_parse_response(const char *raw, size_t n, size_t cap, int *status, char *loc,
                         size_t loc_cap, struct strbuf *body, struct vlm_err *err);
bool fetch_addr_allowed(const char *addr, const char *const *allow, int32_t n_allow);

#endif
