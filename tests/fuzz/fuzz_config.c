/*
 * fuzz_config: arbitrary option values through config_parse (config/config.c).
 * An input starting with '{' is a JSON config file (passed through a memfd); any other input
 * is split on NUL bytes into argv. Checks: config_parse returns 0 or VLM_EINVAL with a
 * message naming something, never crashes, and config_destroy frees everything (ASan).
 * --help, -h and --print-reference are dropped (they print and return 1 by design).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"

#define CHECK_OR_ABORT(x) do { if (!(x)) { fprintf(stderr, "fuzz_config: %s failed\n", #x); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    int saved_level = vlm_log_level;
    vlm_log_level = VLM_LOG_OFF;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    char *argv[66] = {"valley-server"};
    int argc = 1;
    char path[64] = "";
    int fd = -1;
    if (size && data[0] == '{') {
        fd = memfd_create("fuzz_config", 0);
        if (fd < 0 || write(fd, data, size) != (ssize_t)size) goto out;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        argv[argc++] = "--config";
        argv[argc++] = path;
    } else {
        for (char *p = text; p < text + size && argc < 64; p += strlen(p) + 1) {
            if (!strcmp(p, "--help") || !strcmp(p, "-h") || !strcmp(p, "--print-reference")) continue;
            argv[argc++] = p;
        }
    }
    struct config c;
    struct vlm_err err = {0};
    config_defaults(&c);
    int rc = config_parse(&c, argc, argv, NULL, &err);
    CHECK_OR_ABORT(rc == 0 || (rc == VLM_EINVAL && err.msg[0]));
    if (rc == 0) {
        CHECK_OR_ABORT(c.media.min_pixels <= c.media.max_pixels);
        CHECK_OR_ABORT(c.http.port >= 0 && c.http.port <= 65535);
        config_dump(&c); /* exercises every formatter; logging is off */
    }
    config_destroy(&c);
out:
    if (fd >= 0) close(fd);
    free(text);
    vlm_log_level = saved_level;
    return 0;
}
