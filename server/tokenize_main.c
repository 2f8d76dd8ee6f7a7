/*
 * valley-tokenize: the tokenizer from the command line, for scripts and checks.
 *
 *   valley-tokenize MODEL_DIR_OR_TOKENIZER_JSON < text      prints the ids as a JSON array
 *   valley-tokenize --decode [--skip-special] PATH < ids    reads a JSON array, prints text
 *
 * A folder argument means its tokenizer.json, or its slow tokenizer files without one.
 * Exit status 0, 1 on bad input, 2 on usage.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/tokenizer.h"

static char *read_stdin(size_t *len)
{
    struct strbuf b = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) sb_append(&b, buf, n);
    sb_append(&b, "", 0);
    *len = b.n;
    return b.s;
}

static int usage(void)
{
    fprintf(stderr, "usage: valley-tokenize [--decode [--skip-special]] MODEL_DIR_OR_TOKENIZER_JSON\n"
                    "  encodes stdin to a JSON array of ids, or with --decode a JSON array to text\n");
    return 2;
}

int main(int argc, char **argv)
{
    bool decode = false, skip_special = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--decode") == 0) decode = true;
        else if (strcmp(argv[i], "--skip-special") == 0) skip_special = true;
        else if (argv[i][0] == '-' || path) return usage();
        else path = argv[i];
    }
    if (!path) return usage();

    struct stat st;
    struct tokenizer *tok;
    struct vlm_err err = {0};
    bool dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (dir ? tok_load_dir(&tok, path, &err) : tok_load(&tok, path, &err)) {
        fprintf(stderr, "valley-tokenize: %s\n", err.msg);
        return 1;
    }

    size_t len;
    char *in = read_stdin(&len);
    int status = 0;
    struct strbuf out = {0};
    if (!decode) {
        struct i32_vec ids = {0};
        if (tok_encode(tok, in, len, &ids, &err)) {
            fprintf(stderr, "valley-tokenize: %s\n", err.msg);
            status = 1;
        } else {
            sb_append(&out, "[", 1);
            for (size_t i = 0; i < ids.n; i++) sb_printf(&out, i ? ",%d" : "%d", ids.v[i]);
            sb_append(&out, "]\n", 2);
        }
        i32_vec_free(&ids);
    } else {
        cJSON *arr = cJSON_ParseWithLength(in, len);
        struct i32_vec ids = {0};
        const cJSON *x;
        if (!cJSON_IsArray(arr)) status = 1;
        cJSON_ArrayForEach(x, arr) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= tok_vocab_size(tok) ||
                x->valuedouble != (double)(int32_t)x->valuedouble) {
                status = 1;
                break;
            }
            i32_vec_push(&ids, (int32_t)x->valuedouble);
        }
        if (status) fprintf(stderr, "valley-tokenize: stdin is not a JSON array of token ids\n");
        else tok_decode(tok, ids.v, ids.n, skip_special, &out);
        i32_vec_free(&ids);
        cJSON_Delete(arr);
    }
    if (out.n) fwrite(out.s, 1, out.n, stdout);
    sb_free(&out);
    free(in);
    tok_free(tok);
    return status;
}
