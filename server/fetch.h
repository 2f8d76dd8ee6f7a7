/*
 * fetch: downloads one media URL for a request, with caps on bytes, time and redirects.
 *
 * Transfers go through libcurl (http and https only, no proxy from the environment,
 * certificates verified against the system CA bundle or ca_file). Redirects are followed by
 * fetch.c itself, hop by hop, so that each hop is checked as below; the redirect cap, the byte
 * cap and the deadline cover the whole fetch, and a transfer slower than
 * FETCH_LOW_SPEED_BYTES per second for FETCH_LOW_SPEED_S seconds is cut earlier. A redirect
 * from https to http (or any other scheme) is refused.
 *
 * SSRF guard: every hop's host is resolved first and refused (400) when any address is
 * loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16,
 * fe80::/10), CGNAT (100.64/10), unspecified (0/8, ::), multicast or reserved (224/3), unless
 * the host name or the address matches an entry of the allow list (exact host name,
 * IPv4/IPv6 address, or CIDR "10.0.0.0/8"). libcurl is then pinned to exactly the
 * addresses that were checked (CURLOPT_RESOLVE: no second lookup, so DNS rebinding cannot slip
 * in), and its socket callback refuses to connect anywhere else, for http and https alike.
 *
 * Called by the workers (workers.h): blocking is fine there, never on the HTTP or engine thread.
 * Thread-safe.
 */
#ifndef VLM_FETCH_H
#define VLM_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"

/* The low-speed cut-off: a transfer (connection, headers or body) that moves fewer than
 * FETCH_LOW_SPEED_BYTES per second over FETCH_LOW_SPEED_S seconds ends with an error, even
 * before the deadline. */
#define FETCH_LOW_SPEED_BYTES 1024
#define FETCH_LOW_SPEED_S 5

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
bool fetch_addr_allowed(const char *addr, const char *const *allow, int32_t n_allow);

#endif
