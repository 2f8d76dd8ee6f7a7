/*
 * test_config: the option table through every source (argv, env, JSON file), precedence,
 * a table of bad values (each must name the option and the value), --help, the dump's
 * masking of secrets, and that config/valley.conf is current and loads to the defaults.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "test.h"

#define MAXV 32

/* Writes text to a file under the build directory; returns its path (static per slot). */
static const char *write_tmp(int slot, const char *text)
{
    static char paths[4][4200];
    char name[64];
    snprintf(name, sizeof name, "test_config_%d_%d.json", (int)getpid(), slot);
    snprintf(paths[slot], sizeof paths[slot], "%s", test_path("VLM_BUILD_DIR", name));
    FILE *f = fopen(paths[slot], "wb");
    if (!f) return "/nonexistent";
    fputs(text, f);
    fclose(f);
    return paths[slot];
}

/* argv and envp from NULL-terminated string lists; argv[0] is added. */
static int parse(struct config *c, const char *const *args, const char *const *env,
                 struct vlm_err *err)
{
    char *argv[MAXV + 1] = {"valley-server"};
    char *envp[MAXV + 1] = {0};
    int argc = 1;
    for (int i = 0; args && args[i] && argc < MAXV; i++) argv[argc++] = (char *)args[i];
    for (int i = 0; env && env[i] && i < MAXV; i++) envp[i] = (char *)env[i];
    config_defaults(c);
    memset(err, 0, sizeof *err);
    return config_parse(c, argc, argv, envp, err);
}

/* Runs fn with fd (1 or 2) sent to a temporary file; returns what was written (malloc'ed). */
static char *capture(int fd, void (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(fd);
    dup2(fileno(tmp), fd);
    fn(arg);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, fd);
    close(saved);
    long n = ftell(tmp);
    if (n < 0) n = 0;
    char *s = calloc(1, (size_t)n + 1);
    rewind(tmp);
    if (fread(s, 1, (size_t)n, tmp) != (size_t)n) s[0] = 0;
    fclose(tmp);
    return s;
}

/* The "name = value" parts of a dump, one per line, without timestamps and sources. */
static char *dump_values(const char *dump)
{
    char *out = calloc(1, strlen(dump) + 1), *o = out;
    for (const char *line = dump; line && *line;) {
        const char *nl = strchr(line, '\n');
        const char *e = nl ? nl : line + strlen(line);
        const char *a = strstr(line, "config: ");
        if (a && a < e && strncmp(a, "config: file ", 13)) {
            const char *b = e;
            while (b > a && *b != '(') b--;
            if (b == a) b = e;
            memcpy(o, a, (size_t)(b - a));
            o += b - a;
            *o++ = '\n';
        }
        line = nl ? nl + 1 : NULL;
    }
    return out;
}

static void do_dump(void *c) { config_dump(c); }
static void do_reference(void *f) { (void)f; config_print_reference(stdout); }

struct parse_call {
    const char *const *args;
    int rc;
};
static void do_help(void *p)
{
    struct parse_call *pc = p;
    struct config c;
    struct vlm_err err;
    pc->rc = parse(&c, pc->args, NULL, &err);
    config_destroy(&c);
}

int main(void)
{
    struct config c;
    struct vlm_err err;

    TEST("defaults") {
        config_defaults(&c);
        CHECK_EQ(c.http.port, 8000);
        CHECK_STR(c.http.host, "0.0.0.0");
        CHECK_EQ(c.sched.block_size, 16);
        CHECK(c.sched.enable_prefix_caching);
        CHECK(c.api.implicit_image);
        CHECK(c.api.enable_thinking_default);
        CHECK_EQ(c.media.min_pixels, 3136);
        CHECK_EQ(c.media.max_pixels, 12845056);
        CHECK_EQ(c.media.video_num_frames, 8);
        CHECK_EQ(c.engine.kv_cache_memory, 1LL << 30);
        CHECK_EQ(c.engine.backend, CONFIG_BACKEND_AUTO);
        CHECK_EQ(c.log.level, VLM_LOG_INFO);
        CHECK_EQ(c.api.image_start_end_tokens, CONFIG_WRAP_AUTO);
        CHECK_STR(c.api.default_system_prompt, "You are a helpful assistant.");
        CHECK_EQ(c.http.allowed_origins.n, 1);
        CHECK_STR(c.http.allowed_origins.v[0], "*");
        CHECK_EQ(c.media.fetch_allow.n, 0);
        CHECK_EQ(c.source[0], CONFIG_SRC_DEFAULT);
        config_destroy(&c);
    }

    TEST("argv forms: --name value, --name=value, --flag, --no-flag, lists, sizes") {
        const char *args[] = {"--port", "9000", "--max-num-seqs=7", "--no-enable-prefix-caching",
                              "--implicit-image=off", "--enable-thinking-default",
                              "--fetch-allow", " 127.0.0.1/8, ,example.com,", "--kv-cache-memory",
                              "1.5GiB", "--max_body_bytes=10k", "--backend", "CPU",
                              "--gpu-memory-utilization", "0.5", "--model", "/m",
                              "--image-start-end-tokens=on", NULL};
        CHECK_EQ(parse(&c, args, NULL, &err), 0);
        CHECK_EQ(c.http.port, 9000);
        CHECK_EQ(c.sched.max_num_seqs, 7);
        CHECK(!c.sched.enable_prefix_caching);
        CHECK(!c.api.implicit_image);
        CHECK(c.api.enable_thinking_default);
        CHECK_EQ(c.media.fetch_allow.n, 2);
        if (c.media.fetch_allow.n == 2) {
            CHECK_STR(c.media.fetch_allow.v[0], "127.0.0.1/8");
            CHECK_STR(c.media.fetch_allow.v[1], "example.com");
        }
        CHECK_EQ(c.engine.kv_cache_memory, 3LL << 29);
        CHECK_EQ(c.http.max_body_bytes, 10000);
        CHECK_EQ(c.engine.backend, CONFIG_BACKEND_CPU);
        CHECK_NEAR(c.engine.gpu_memory_utilization, 0.5, 0);
        CHECK_STR(c.engine.model, "/m");
        CHECK_EQ(c.api.image_start_end_tokens, CONFIG_WRAP_ON);
        config_destroy(&c);
    }

    TEST("size strings") {
        static const struct { const char *s; long long v; } ok[] = {
            {"0", 0}, {"4096", 4096}, {"1k", 1000}, {"1KiB", 1024}, {"2MB", 2000000},
            {"64MiB", 64LL << 20}, {"1gib", 1LL << 30}, {"1.5G", 1500000000}, {"2 TiB", 2LL << 40}};
        for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
            int64_t v = -1;
            CHECK_EQ(config_parse_size(ok[i].s, &v), 0);
            CHECK_EQ(v, ok[i].v);
        }
        static const char *const bad[] = {"", "-1", "1XB", "GiB", "1.", ".5G", "1e9",
                                          "99999999999999999999", "9000000TiB", "1 2"};
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            int64_t v;
            CHECK_EQ(config_parse_size(bad[i], &v), VLM_EINVAL);
        }
    }

    TEST("precedence: defaults < file < env < flags") {
        const char *file = write_tmp(0, "{ // comment\n \"port\": 1, \"block-size\": 32, "
                                        "\"max_num_seqs\": 5, \"fetch-allow\": [\"a.com\", \"10.0.0.0/8\"],"
                                        " /* block */ \"enable-prefix-caching\": false }\n");
        const char *args[] = {"--port", "3", "--config", file, NULL};
        const char *env[] = {"VALLEY_PORT=2", "VALLEY_BLOCK_SIZE=64", "PATH=/bin",
                             "VALLEY_SERVICE_HOST=10.0.0.1", NULL};
        CHECK_EQ(parse(&c, args, env, &err), 0);
        CHECK_EQ(c.http.port, 3);
        CHECK_EQ(c.sched.block_size, 64);
        CHECK_EQ(c.sched.max_num_seqs, 5);
        CHECK(!c.sched.enable_prefix_caching);
        CHECK_EQ(c.media.fetch_allow.n, 2);
        CHECK_EQ(c.sched.max_num_batched_tokens, 8192);
        CHECK_STR(c.config_file, file);
        config_destroy(&c);

        /* the file named by VALLEY_CONFIG, env over file */
        char envcfg[600];
        snprintf(envcfg, sizeof envcfg, "VALLEY_CONFIG=%s", file);
        const char *env2[] = {envcfg, "VALLEY_MAX_NUM_SEQS=9", NULL};
        CHECK_EQ(parse(&c, NULL, env2, &err), 0);
        CHECK_EQ(c.http.port, 1);
        CHECK_EQ(c.sched.max_num_seqs, 9);
        CHECK_EQ(c.sched.block_size, 32);
        config_destroy(&c);

        /* a Kubernetes service link in VALLEY_PORT is not a port */
        const char *env3[] = {"VALLEY_PORT=tcp://10.1.2.3:8000", NULL};
        CHECK_EQ(parse(&c, NULL, env3, &err), 0);
        CHECK_EQ(c.http.port, 8000);
        config_destroy(&c);
    }

    TEST("bad values name the option and the value") {
        const char *badjson = write_tmp(1, "{\"port\": 1,,}");
        const char *unknown = write_tmp(2, "{\"prot\": 1}");
        const char *wrongtype = write_tmp(3, "{\"port\": [1]}");
        static char cfg_bad[600], cfg_unknown[600], cfg_type[600];
        snprintf(cfg_bad, sizeof cfg_bad, "--config=%s", badjson);
        snprintf(cfg_unknown, sizeof cfg_unknown, "--config=%s", unknown);
        snprintf(cfg_type, sizeof cfg_type, "--config=%s", wrongtype);
        struct {
            const char *args[5];
            const char *env[2];
            const char *want[3];
        } cases[] = {
            {{"--port", "abc"}, {0}, {"--port", "'abc'", "integer in [0, 65535]"}},
            {{"--port", "70000"}, {0}, {"--port", "70000", "[0, 65535]"}},
            {{"--port", "8080x"}, {0}, {"--port", "8080x"}},
            {{"--port", ""}, {0}, {"--port", "''"}},
            {{"--prot", "1"}, {0}, {"unknown option", "--prot", "did you mean --port?"}},
            {{"--max_num_seq=1"}, {0}, {"--max_num_seq", "did you mean --max-num-seqs?"}},
            {{"--zzzzzzzz"}, {0}, {"--zzzzzzzz", "see --help"}},
            {{"--no-port"}, {0}, {"unknown option", "--no-port"}},
            {{"--no-implicit-image=yes"}, {0}, {"--no-implicit-image", "no value"}},
            {{"--backend", "tpu"}, {0}, {"--backend", "tpu", "one of auto, cpu, cuda"}},
            {{"--log-level=loud"}, {0}, {"--log-level", "loud", "debug"}},
            {{"--enable-prefix-caching=maybe"}, {0}, {"--enable-prefix-caching", "maybe", "true/false"}},
            {{"--kv-cache-memory", "1XB"}, {0}, {"--kv-cache-memory", "1XB", "size"}},
            {{"--kv-cache-memory", "1KiB"}, {0}, {"--kv-cache-memory", "1KiB", "[1048576,"}},
            {{"--gpu-memory-utilization", "1.5"}, {0}, {"--gpu-memory-utilization", "1.5", "[0.05, 1]"}},
            {{"--gpu-memory-utilization", "nan"}, {0}, {"--gpu-memory-utilization", "nan"}},
            {{"--max-num-seqs"}, {0}, {"--max-num-seqs", "missing value"}},
            {{"serve"}, {0}, {"unexpected argument", "serve"}},
            {{0}, {"VALLEY_MAX_NUM_SEQS=0"}, {"VALLEY_MAX_NUM_SEQS", "'0'", "[1, 65536]"}},
            {{0}, {"VALLEY_IMPLICIT_IMAGE=2"}, {"VALLEY_IMPLICIT_IMAGE", "'2'", "--implicit-image"}},
            {{"--config", "/nonexistent/v.json"}, {0}, {"/nonexistent/v.json", "cannot read"}},
            {{"--config"}, {0}, {"--config", "missing value"}},
            {{cfg_bad}, {0}, {badjson, "invalid JSON"}},
            {{cfg_unknown}, {0}, {unknown, "prot", "unknown option (did you mean --port?)"}},
            {{cfg_type}, {0}, {"port", "wrong JSON type"}},
            {{"--default-system-prompt", "look: <image>"}, {0}, {"--default-system-prompt", "<image>"}},
            {{"--min-pixels", "9000", "--max-pixels", "8000"}, {0}, {"--min-pixels", "9000", "8000"}},
            {{"--default-system-prompt-file", "/nonexistent/p.txt"}, {0},
             {"--default-system-prompt-file", "/nonexistent/p.txt"}},
        };
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            int rc = parse(&c, cases[i].args, cases[i].env, &err);
            CHECK_EQ(rc, VLM_EINVAL);
            CHECK_EQ(err.code, VLM_EINVAL);
            for (int k = 0; k < 3 && cases[i].want[k]; k++) {
                if (!strstr(err.msg, cases[i].want[k])) {
                    CHECK(strstr(err.msg, cases[i].want[k]));
                    fprintf(stderr, "  case %zu: '%s' not in \"%s\"\n", i, cases[i].want[k], err.msg);
                }
            }
            config_destroy(&c);
        }
        /* a file value goes through the same checks */
        const char *badval = write_tmp(1, "{\"block-size\": \"x\"}");
        const char *args[] = {"--config", badval, NULL};
        CHECK_EQ(parse(&c, args, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "block-size") && strstr(err.msg, "'x'"));
        config_destroy(&c);
        const char *frac = write_tmp(1, "{\"port\": 80.5}");
        const char *args2[] = {"--config", frac, NULL};
        CHECK_EQ(parse(&c, args2, NULL, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "port") && strstr(err.msg, "80.5"));
        config_destroy(&c);
    }

    TEST("default system prompt from a file") {
        const char *p = write_tmp(0, "Think first.\nThen answer.\n");
        const char *args[] = {"--default-system-prompt", "ignored", "--default-system-prompt-file", p, NULL};
        CHECK_EQ(parse(&c, args, NULL, &err), 0);
        CHECK_STR(c.api.default_system_prompt, "Think first.\nThen answer.");
        config_destroy(&c);
    }

    TEST("--help and --print-reference return 1") {
        const char *h[] = {"--port", "bad", "--help", NULL};
        struct parse_call pc = {h, 0};
        char *out = capture(1, do_help, &pc);
        CHECK_EQ(pc.rc, 1);
        CHECK(strstr(out, "--max-num-batched-tokens INT"));
        CHECK(strstr(out, "VALLEY_MAX_NUM_BATCHED_TOKENS"));
        CHECK(strstr(out, "--enable-prefix-caching, --no-enable-prefix-caching"));
        free(out);
        const char *r[] = {"--print-reference", NULL};
        pc.args = r;
        out = capture(1, do_help, &pc);
        CHECK_EQ(pc.rc, 1);
        CHECK(strstr(out, "\"block-size\": 16"));
        free(out);
    }

    TEST("dump: one line per option, api key masked") {
        const char *args[] = {"--api-key", "sk-secret-123", "--port", "1234", NULL};
        CHECK_EQ(parse(&c, args, NULL, &err), 0);
        int saved = vlm_log_level;
        vlm_log_level = VLM_LOG_INFO;
        char *out = capture(2, do_dump, &c);
        vlm_log_level = saved;
        CHECK(!strstr(out, "sk-secret-123"));
        CHECK(strstr(out, "api-key"));
        CHECK(strstr(out, "********"));
        CHECK(strstr(out, "port                       = 1234 (flag)"));
        CHECK(strstr(out, "block-size                 = 16 (default)"));
        CHECK(strstr(out, "kv-cache-memory            = 1GiB (default)"));
        free(out);
        config_destroy(&c);
    }

    TEST("config/valley.conf is current and loads to the defaults") {
        size_t len = 0;
        char *committed = vlm_read_file(test_path("VLM_SOURCE_DIR", "config/valley.conf"), &len);
        char *fresh = capture(1, do_reference, NULL);
        CHECK(committed != NULL);
        if (committed && strcmp(committed, fresh))
            fprintf(stderr, "  config/valley.conf is stale: regenerate with "
                            "`valley-server --print-reference > config/valley.conf`\n");
        CHECK(committed && !strcmp(committed, fresh));
        const char *ref = write_tmp(0, fresh);
        const char *args[] = {"--config", ref, NULL};
        CHECK_EQ(parse(&c, args, NULL, &err), 0);
        struct config d;
        config_defaults(&d);
        char *dump_c = capture(2, do_dump, &c);
        char *dump_d = capture(2, do_dump, &d);
        /* same values: the dumps differ only in the source column and timestamps */
        int n_file = 0;
        for (int i = 0; i < CONFIG_MAX_OPTIONS; i++) n_file += c.source[i] == CONFIG_SRC_FILE;
        CHECK(n_file >= 40);
        char *vc = dump_values(dump_c), *vd = dump_values(dump_d);
        CHECK(strlen(vd) > 1000);
        CHECK_STR(vc, vd);
        free(vc);
        free(vd);
        CHECK_EQ(c.http.port, d.http.port);
        CHECK_STR(c.api.default_system_prompt, d.api.default_system_prompt);
        CHECK_EQ(c.engine.kv_cache_memory, d.engine.kv_cache_memory);
        CHECK_EQ(c.http.allowed_origins.n, d.http.allowed_origins.n);
        CHECK_NEAR(c.engine.gpu_memory_utilization, d.engine.gpu_memory_utilization, 0);
        CHECK_EQ(c.media.max_pixels, d.media.max_pixels);
        free(dump_c);
        free(dump_d);
        free(fresh);
        free(committed);
        config_destroy(&d);
        config_destroy(&c);
    }

    TEST("deploy/k8s/configmap.yaml: every VALLEY_* key is an option with a valid value") {
        size_t n = 0;
        char *yaml = vlm_read_file(test_path("VLM_SOURCE_DIR", "deploy/k8s/configmap.yaml"), &n);
        if (yaml) {
            static char vars[MAXV][256];
            const char *env[MAXV + 1] = {0};
            int nv = 0;
            for (char *line = strtok(yaml, "\n"); line && nv < MAXV; line = strtok(NULL, "\n")) {
                char key[128], val[120];
                if (sscanf(line, " %127[A-Z0-9_]: \"%119[^\"]\"", key, val) == 2 &&
                    !strncmp(key, "VALLEY_", 7)) {
                    snprintf(vars[nv], sizeof vars[nv], "%s=%s", key, val);
                    env[nv] = vars[nv];
                    nv++;
                }
            }
            CHECK(nv >= 5);
            int rc = parse(&c, NULL, env, &err);
            CHECK_EQ(rc, 0);
            if (rc) fprintf(stderr, "  %s\n", err.msg);
            int n_env = 0;
            for (int i = 0; i < CONFIG_MAX_OPTIONS; i++) n_env += c.source[i] == CONFIG_SRC_ENV;
            CHECK_EQ(n_env, nv); /* unknown VALLEY_* names are ignored, so count the hits */
            config_destroy(&c);
            free(yaml);
        }
    }

    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "test_config_%d_%d.json", (int)getpid(), i);
        unlink(test_path("VLM_BUILD_DIR", name));
    }
    return test_report();
}
