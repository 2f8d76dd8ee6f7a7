/*
 * Fuzz target: the media fetcher's HTTP/1.1 response parser (status line, headers, Location,
 * chunked and Content-Length bodies, the byte cap) on arbitrary bytes, as received from a
 * hostile media host.
 */
#include "server/fetch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw = malloc(size + 1); /* the parser reads a NUL-terminated buffer, as recv_all makes */
    if (!raw) return 0;
    memcpy(raw, data, size);
    raw[size] = 0;
    int status = 0;
    char loc[2000];
    struct strbuf body = {0};
    struct vlm_err err = {0};
    int rc = fetch_parse_response(raw, size, 1 << 16, &status, loc, sizeof loc, &body, &err);
    if (rc == 0 && status >= 300 && status < 400 && strlen(loc) >= sizeof loc) abort();
    if (rc == 0 && status >= 200 && status < 300 && (body.n == 0 || body.n > (1 << 16))) abort();
    if (rc != 0 && (err.http_status != 400 || !err.msg[0])) abort();
    sb_free(&body);
    free(raw);
    return 0;
}
