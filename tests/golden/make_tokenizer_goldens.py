#!/usr/bin/env python3
"""Makes the tokenizer goldens: a corpus of strings and the ids Hugging Face `tokenizers`
gives them, for tests/unit/test_tokenizer.c (which compares without Python).

    python3 tests/golden/make_tokenizer_goldens.py [TOKENIZER_JSON]

Default tokenizer: the committed fixture (tests/fixtures/README.md; $VLM_FIXTURES overrides).
Writes tests/golden/tokenizer/corpus.jsonl, one JSON object per line:
    {"text": s, "ids": [...]}   plus "nfc": NFC(s) when that differs from s, and "hex": the
                                UTF-8 of s in hex when s holds a NUL (C strings stop there), and "nfc_hex" likewise
and tests/golden/tokenizer/decode.jsonl, HF's lossy decoding of byte-token sequences that
are often not valid UTF-8:
    {"ids": [...], "text": decode(ids)}   (plus "hex" as above)
Strings are hand-written cases plus generated ones from a seeded RNG, so the output is the
same on every run. The script checks decode(encode(s)) == NFC(s) with HF itself and refuses
to write a corpus where that fails.
Needs: pip install tokenizers (developer only; CI reads the committed files).

Differential mode, for a developer hunting differences (writes elsewhere, commits nothing):
    python3 tests/golden/make_tokenizer_goldens.py --random 20000 --seed 1 --out /tmp/tokdiff
    VLM_SOURCE_DIR=/tmp/tokdiff build/tests/test_tokenizer
writes N strings of random code points mixed with the generators below; the expected decode
is HF's own decode (not Python's NFC, whose Unicode version differs).
"""
import json
import os
import random
import sys
import unicodedata

from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizer")

# ---- hand-written cases -------------------------------------------------------------------
HAND = [
    "", " ", "  ", "\n", "\r\n", "\t", "a", "A", "0", "Hello world", "Hello, world!",
    "hello   world", "  leading", "trailing  ", "line1\nline2\r\nline3\rline4",
    "tabs\tand\t\ttabs", " \t \n \r\n  x", "x \n\n\n y", "\n\n\n\n", "    indented\n        more",
    "I'M HERE", "DON'T", "YOU'RE", "WE'VE", "SHE'LL", "HE'D", "IT'S", "i'm it's you're",
    "'s 't 're 've 'm 'll 'd", "'S'T'RE'VE'M'LL'D", "O'Neil's", "rock 'n' roll", "''quoted''",
    "it\u2019s curly", "\u017ft long s 'ſ", "K\u212a kelvin",
    "12345678901234567890", "3.14159", "1,000,000", "v1.2.3-rc4", "0x1F2E3D", "1e-9",
    "\u0661\u0662\u0663 arabic digits", "\uff11\uff12\uff13 fullwidth", "\u0967\u0968\u0969 devanagari",
    "\u2460\u2461 circled", "\u00bd\u00be fractions", "\u2167 roman",
    "https://www.example.com/path/to/page?query=1&other=two#frag",
    "http://localhost:8080/v1/chat/completions", "mailto:someone@example.org",
    "ftp://ftp.example.net/pub/file.tar.gz", "www.example.co.uk/index.html?a=%20b",
    "e\u0301", "caf\u0065\u0301", "A\u030a", "\u212b ANGSTROM", "\u2126 ohm", "o\u0308 u\u0308",
    "a\u0323\u0302", "q\u0307\u0323", "\u1e9b\u0323", "\uf900\uf901 compat ideographs",
    "\u1100\u1161\u11a8 jamo", "\u1112\u1161\u11ab\u1100\u1173\u11af", "n\u0303o", "\u0041\u0308\u0304",
    "\u0928\u093c nukta", "\u0915\u094d\u0937", "\u00c5\u0301",
    "\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
    "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5", "1\ufe0f\u20e3",
    "\U0001F9D1\U0001F3FF\u200d\U0001F4BB", "\u2764\ufe0f", "\U0001F469\U0001F3FB\u200d\u2764\ufe0f\u200d\U0001F468\U0001F3FE",
    "你好，世界！", "我爱北京天安门。", "日本語のテキストです。", "カタカナとひらがな", "한국어 텍스트입니다.",
    "مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "नमस्ते दुनिया", "हिन्दी में लिखा", "สวัสดีชาวโลก", "ภาษาไทย",
    "Ελληνικά", "Русский текст", "עברית", "ქართული", "Tiếng Việt có dấu",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|im_start|>", "abc<|im_end|>def", "<think>\n\n</think>\n\n",
    "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start", "<|im_end", "< think>", "<<think>>",
    "<|fim_prefix|>code<|fim_suffix|>more<|fim_middle|>", "<tool_call>{\"a\": 1}</tool_call>",
    "text <|endoftext|> text", "<|im_start|>\u0301", "\u00e9<|im_end|>\u0301",
    "\x00", "a\x00b", "\x01\x02\x7f", "\u0085", "\u00a0nbsp", "a\u3000b", "a\u2028b\u2029c",
    "a\u200bb", "a\u180eb", "a\ufeffb", "a\u1680b", "a\u2000\u2001\u2002\u200ab", "a\u202f\u205fb",
    "'\u180ea", "a\u3000\u3000\u180eb", "\x85 \u202f\u180e\x1a", "x \u180e y",  # onig's \s
    "a\x0bb\x0cc", "a \u00a0 b", " \u00a0\n", "\u3000\u3000", "\t\u3000\n",
    "def f(x):\n    return x * 2\n", "int main(void) {\n\treturn 0;\n}\n", "for (i = 0; i < n; i++) a[i] += b[i];",
    "if x == 1 and y != 2:\n\tpass\r\n", "console.log(`${a}`);", "SELECT * FROM t WHERE id = 42;",
    "#include <stdio.h>", "   ", "!!!???...", "---===+++", "@#$%^&*()", "😀😀😀😀", "....\n\n....",
    "a" * 300, "ab" * 400, "\u4e00" * 200, "9" * 500, " " * 300, "\n" * 100, "\t" * 50,
    "Pneumonoultramicroscopicsilicovolcanoconiosis", "x" * 1000 + "y",
    "Donaudampfschifffahrtsgesellschaftskapitänswitwe",
]

# ---- generators ---------------------------------------------------------------------------
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people "
         "my than first water been call who oil its now find long down day did get come made may "
         "part model token server request batch kernel memory cache attention layer vision image "
         "video stream tensor python unicode normalization").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D"]
PUNCT = list(".,;:!?-()[]{}\"'/\\*&%$#@~`^|<>+=_")
WS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\t", "   \n  ", "\u00a0", "\u3000",
      "\u2028", "\u0085", "\u200b", "\x0b", "\x0c", "\u2003", "\r\n\r\n", " \t\r\n "]
EMOJI = ["\U0001F600", "\U0001F602", "\U0001F44D", "\U0001F44B", "\U0001F680", "\u2764\ufe0f",
         "\U0001F525", "\U0001F389", "\U0001F9E0", "\U0001F436", "\u2600\ufe0f", "\U0001F1E8\U0001F1F3"]
SKIN = ["", "\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
PEOPLE = ["\U0001F468", "\U0001F469", "\U0001F467", "\U0001F466", "\U0001F9D1"]
ZWJ_TAILS = ["\U0001F4BB", "\U0001F52C", "\U0001F680", "\U0001F373", "\u2695\ufe0f", "\U0001F3A8"]
COMBINING = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0304", "\u0306", "\u0307", "\u0308",
             "\u030a", "\u030b", "\u030c", "\u0323", "\u0327", "\u0328", "\u031b", "\u0345"]
NFC_SINGLETONS = ["\u212b", "\u2126", "\u212a", "\uf900", "\uf91d", "\u0340", "\u0341", "\u0374",
                  "\u037e", "\u0387", "\u1f71", "\u2000", "\u2001"]
ADDED = None  # filled from the tokenizer file


def rchars(rng, lo, hi, n):
    return "".join(chr(rng.randint(lo, hi)) for _ in range(n))


def gen_english(rng):
    out = []
    for i in range(rng.randint(1, 25)):
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.15: w = w.capitalize()
        elif r < 0.22: w = w.upper()
        if rng.random() < 0.1: w += rng.choice(CONTRACTIONS)
        out.append(w)
        if rng.random() < 0.15: out.append(rng.choice(PUNCT))
        if rng.random() < 0.05: out.append(str(rng.randint(0, 10 ** rng.randint(1, 8))))
    sep = [" "] * 8 + ["  ", "\n", "\t", ""]
    return "".join(w + rng.choice(sep) for w in out).rstrip(rng.choice(["", " "]))


def gen_contraction(rng):
    subj = rng.choice(["I", "YOU", "WE", "THEY", "IT", "SHE", "HE", "DON", "CAN", "WON", "JOHN"])
    c = rng.choice(CONTRACTIONS)
    c = "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in c)
    return rng.choice(["", " ", "\n"]) + subj + c + rng.choice(["", " GO", "!", " 's", "'", "''"])


CODE_LINES = [
    "def {n}(x, y):", "    return x + y", "for (int i = 0; i < {k}; i++) {{", "\tsum += a[i] * b[i];",
    "}}", "if (ptr == NULL) return -1;", "class {N}:", "    def __init__(self):", "        self.x = {k}",
    "import numpy as np", "#include <{n}.h>", "const {n} = require('{n}');", "let v = [{k}, {k}, {k}];",
    "x = {{'a': {k}, \"b\": [1, 2]}}", "// TODO: fix {n}", "/* {n} */", "print(f\"{{x}} = {{y:.3f}}\")",
    "SELECT {n} FROM t WHERE id={k};", "<div class=\"{n}\">{N}</div>", "fn {n}(&self) -> u32 {{ {k} }}",
    "    }} else {{", "$ ./{n} --flag={k} 2>&1 | grep -v x", "a != b && c >= d || !e",
]


def gen_code(rng):
    lines = []
    for i in range(rng.randint(1, 8)):
        ln = rng.choice(CODE_LINES).format(n=rng.choice(WORDS), N=rng.choice(WORDS).capitalize(),
                                           k=rng.randint(0, 99999))
        if rng.random() < 0.2: ln = "\t" + ln
        if rng.random() < 0.2: ln = "    " + ln
        lines.append(ln)
    return rng.choice(["\n", "\r\n", "\n\n"]).join(lines) + rng.choice(["", "\n", "\r\n", "  \n"])


def script_text(rng, ranges, punct, sep, n_lo=3, n_hi=40):
    s = []
    for i in range(rng.randint(n_lo, n_hi)):
        lo, hi = rng.choice(ranges)
        s.append(chr(rng.randint(lo, hi)))
        r = rng.random()
        if r < 0.08: s.append(rng.choice(punct))
        elif r < 0.16: s.append(sep)
    return "".join(s)


def gen_chinese(rng):
    return script_text(rng, [(0x4E00, 0x9FA5)], list("，。！？、；：“”（）《》") + [" ", "a", "1"], "")


def gen_japanese(rng):
    return script_text(rng, [(0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x9FA5), (0x30FC, 0x30FC)],
                       list("。、「」！？・ー") + ["ｶﾀｶﾅ", "１２"], "")


def gen_korean(rng):
    s = script_text(rng, [(0xAC00, 0xD7A3)], list(".,!?") + ["1"], " ")
    if rng.random() < 0.3:  # conjoining jamo: NFC composes them into syllables
        s += " " + "".join(chr(rng.randint(0x1100, 0x1112)) + chr(rng.randint(0x1161, 0x1175)) +
                           (chr(rng.randint(0x11A8, 0x11C2)) if rng.random() < 0.5 else "")
                           for _ in range(rng.randint(1, 5)))
    return s


def gen_arabic(rng):
    return script_text(rng, [(0x0621, 0x063A), (0x0641, 0x064A), (0x064B, 0x0652), (0x0660, 0x0669)],
                       list("،؛؟.") + ["\u0640"], " ")


def gen_hindi(rng):
    return script_text(rng, [(0x0905, 0x0939), (0x093E, 0x094C), (0x094D, 0x094D), (0x0966, 0x096F),
                             (0x0901, 0x0903), (0x093C, 0x093C)], list("।॥,") + ["\u200d"], " ")


def gen_thai(rng):
    return script_text(rng, [(0x0E01, 0x0E2E), (0x0E30, 0x0E3A), (0x0E40, 0x0E44), (0x0E48, 0x0E4B),
                             (0x0E50, 0x0E59)], list("ๆฯ") + ["."], " ")


def gen_other_scripts(rng):
    ranges = rng.choice([[(0x0391, 0x03A9), (0x03B1, 0x03C9)], [(0x0410, 0x044F)], [(0x05D0, 0x05EA)],
                         [(0x10D0, 0x10F0)], [(0x0531, 0x0556)], [(0x0E81, 0x0EAE)], [(0x1E00, 0x1EFF)]])
    return script_text(rng, ranges, list(".,"), " ")


def gen_emoji(rng):
    s = []
    for i in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.3: s.append(rng.choice(EMOJI))
        elif r < 0.55: s.append(rng.choice(["\U0001F44D", "\U0001F44B", "\U0001F64F", "\U0001F9D1", "\U0001F476"]) + rng.choice(SKIN))
        elif r < 0.8:
            fam = [rng.choice(PEOPLE) + rng.choice(SKIN) for _ in range(rng.randint(2, 4))]
            s.append("\u200d".join(fam))
        else:
            s.append(rng.choice(PEOPLE) + rng.choice(SKIN) + "\u200d" + rng.choice(ZWJ_TAILS))
        if rng.random() < 0.4: s.append(rng.choice([" ", "", "!", " ok ", "\n", "哈"]))
    return "".join(s)


def gen_combining(rng):
    s = []
    for i in range(rng.randint(1, 12)):
        base = rng.choice("aeiouyncsAEIOUNCSzqxw ")
        marks = "".join(rng.choice(COMBINING) for _ in range(rng.randint(0, 3)))
        s.append(base + marks)
        if rng.random() < 0.2: s.append(rng.choice(NFC_SINGLETONS))
        if rng.random() < 0.3: s.append(" ")
    return "".join(s)


def gen_digits(rng):
    r = rng.random()
    if r < 0.4: return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 60)))
    if r < 0.7:
        return " ".join("{:,}".format(rng.randint(0, 10 ** 12)) if rng.random() < 0.5 else
                        "{:.{}f}".format(rng.random() * 10 ** rng.randint(0, 6), rng.randint(0, 5))
                        for _ in range(rng.randint(1, 6)))
    if r < 0.85:
        return "".join(rng.choice(["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९", "0123456789"])[rng.randint(0, 9)]
                       for _ in range(rng.randint(1, 30)))
    return "Call +1-{}-{}-{} or {}/{}/{} at {}:{:02d}".format(
        rng.randint(100, 999), rng.randint(100, 999), rng.randint(1000, 9999), rng.randint(1, 12),
        rng.randint(1, 28), rng.randint(1900, 2100), rng.randint(0, 23), rng.randint(0, 59))


def gen_whitespace(rng):
    s = []
    for i in range(rng.randint(1, 10)):
        s.append(rng.choice(WS) * rng.randint(1, 4))
        if rng.random() < 0.7: s.append(rng.choice(WORDS + ["你好", "x", "1", "!", "\U0001F600"]))
    return "".join(s)


def gen_url(rng):
    host = ".".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) + rng.choice([".com", ".org", ".io", ".cn", ".co.jp"])
    path = "/".join(rng.choice(WORDS + [str(rng.randint(0, 999))]) for _ in range(rng.randint(0, 4)))
    q = "&".join("{}={}".format(rng.choice(WORDS), rng.randint(0, 9999)) for _ in range(rng.randint(0, 3)))
    url = rng.choice(["https://", "http://", "ftp://", "", "www."]) + host + ("/" + path if path else "")
    if q: url += "?" + q
    if rng.random() < 0.3: url += "#" + rng.choice(WORDS)
    if rng.random() < 0.2: url += "%E4%BD%A0"
    return rng.choice(["", "see ", "Link: ", "(", "<"]) + url + rng.choice(["", ".", ")", ">", " now"])


def gen_long_word(rng):
    r = rng.random()
    n = rng.randint(100, 1500)
    if r < 0.3: return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    if r < 0.5: return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(n)) + "=="
    if r < 0.65: return rng.choice(WORDS) * rng.randint(20, 120)
    if r < 0.8: return rchars(rng, 0x4E00, 0x9FA5, n // 3)
    if r < 0.9: return "".join(rng.choice(["é", "e\u0301", "ü", "ñ", "ß", "ø"]) for _ in range(n // 2))
    return rng.choice(PUNCT) * rng.randint(50, 400)


def gen_added(rng):
    s = []
    for i in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.4: s.append(rng.choice(ADDED))
        elif r < 0.5: s.append(rng.choice(ADDED)[:-1])  # cut short: not a token
        elif r < 0.6: s.append("<|" + rng.choice(WORDS) + "|>")
        else: s.append(rng.choice([gen_english, gen_chinese, gen_emoji, gen_code])(rng)[:40])
        if rng.random() < 0.3: s.append(rng.choice(["\n", " ", "", "\u0301"]))
    return "".join(s)


def gen_random_unicode(rng):
    # Characters of long-stable blocks only, so that Unicode version differences between
    # Python, HF's Rust crates, PCRE2 and utf8proc cannot change the answer.
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x2000, 0x206F),
              (0x2100, 0x214F), (0x2190, 0x23FF), (0x2500, 0x27BF), (0x3000, 0x303F), (0xFF01, 0xFF5E)]
    s = []
    while len(s) < rng.randint(1, 40):
        lo, hi = rng.choice(blocks)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) in ("Cn", "Co", "Cs"): continue
        s.append(c)
    return "".join(s)


def gen_mixed(rng):
    gens = [gen_english, gen_code, gen_chinese, gen_japanese, gen_korean, gen_arabic, gen_hindi,
            gen_thai, gen_emoji, gen_combining, gen_digits, gen_whitespace, gen_url, gen_added,
            gen_contraction, gen_other_scripts, gen_random_unicode]
    return rng.choice(["", " ", "\n"]).join(rng.choice(gens)(rng)[:120] for _ in range(rng.randint(2, 4)))


GENERATORS = [  # (generator, how many strings)
    (gen_english, 250), (gen_contraction, 80), (gen_code, 150), (gen_chinese, 120),
    (gen_japanese, 100), (gen_korean, 100), (gen_arabic, 90), (gen_hindi, 90), (gen_thai, 90),
    (gen_other_scripts, 60), (gen_emoji, 120), (gen_combining, 120), (gen_digits, 120),
    (gen_whitespace, 150), (gen_url, 80), (gen_long_word, 25), (gen_added, 150),
    (gen_random_unicode, 100), (gen_mixed, 200),
]


def gen_decode_cases(rng, tok):
    """Byte-token sequences that are often invalid UTF-8, decoded by HF (from_utf8_lossy)."""
    byte_ids = [tok.token_to_id(c) for c in BYTE_CHARS]
    frags = [b"\xe4\xbd\xa0", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"a", b" ", b"\xe4\xbd", b"\xf0\x9f",
             b"\xf0\x9f\x98", b"\x80", b"\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
             b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\xc2", b"\xe0\xa0", b"\xf0\x90\x80", b"\xef\xbf\xbd"]
    cases = []
    for i in range(300):
        data = b"".join(rng.choice(frags) if rng.random() < 0.8 else bytes([rng.randint(0, 255)])
                        for _ in range(rng.randint(1, 8)))
        ids = [byte_ids[b] for b in data]
        if rng.random() < 0.3:  # a special token in the middle
            ids.insert(rng.randint(0, len(ids)), tok.token_to_id("<|im_end|>"))
        row = {"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)}
        if "\x00" in row["text"]: row["hex"] = row["text"].encode().hex()
        cases.append(row)
    return cases


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    m = dict(zip(bs, cs))
    return [chr(m[b]) for b in range(256)]


BYTE_CHARS = bytes_to_unicode()


def random_strings(rng, n):
    def cp():
        r = rng.random()
        if r < 0.3: return chr(rng.randint(0, 0x7F))
        if r < 0.6: c = rng.randint(0x80, 0xFFFF)
        elif r < 0.7: c = rng.randint(0x10000, 0x10FFFF)
        else: c = rng.choice([0x20, 0x9, 0xA, 0xD, 0x85, 0xA0, 0x1680, 0x180E, 0x2000, 0x200B, 0x2028,
                              0x202F, 0x205F, 0x3000, 0xFEFF, 0x27, 0x301, 0x17F, 0x130, 0x212A, 0x345])
        return chr(0x41 if 0xD800 <= c <= 0xDFFF else c)
    out = []
    for _ in range(n):
        if rng.random() < 0.5: out.append("".join(cp() for _ in range(rng.randint(1, 30))))
        else: out.append(rng.choice(GENERATORS)[0](rng) + "".join(cp() for _ in range(rng.randint(0, 5))))
    return out


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def differential(tok, n, seed, out_dir):
    rng = random.Random(seed)
    rows = []
    for s in random_strings(rng, n):
        ids = tok.encode(s, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        row = {"text": s, "ids": ids}
        if back != s: row["nfc"] = back
        if "\x00" in s:
            row["hex"] = s.encode().hex()
            if back != s: row["nfc_hex"] = back.encode().hex()
        rows.append(row)
    d = os.path.join(out_dir, "tests", "golden", "tokenizer")
    os.makedirs(d, exist_ok=True)
    write_rows(os.path.join(d, "corpus.jsonl"), rows)
    write_rows(os.path.join(d, "decode.jsonl"), gen_decode_cases(rng, tok))
    print(f"{len(rows)} random strings; now run: VLM_SOURCE_DIR={out_dir} build/tests/test_tokenizer")


def main():
    global ADDED
    args = sys.argv[1:]
    opts = {}
    while len(args) >= 2 and args[0] in ("--random", "--seed", "--out"):
        opts[args[0]] = args[1]
        args = args[2:]
    path = args[0] if args else str(vlm_fixtures.tokenizer_dir() / "tokenizer.json")
    tok = Tokenizer.from_file(path)
    ADDED = [t["content"] for t in json.load(open(path, encoding="utf-8"))["added_tokens"]]
    if "--random" in opts:
        return differential(tok, int(opts["--random"]), int(opts.get("--seed", 1)), opts.get("--out", "/tmp/tokdiff"))
    rng = random.Random(20261123)
    texts = list(HAND)
    for gen, count in GENERATORS:
        for _ in range(count):
            texts.append(gen(rng))
    seen, corpus, bad = set(), [], 0
    for s in texts:
        if s in seen: continue
        seen.add(s)
        ids = tok.encode(s, add_special_tokens=False).ids
        nfc = unicodedata.normalize("NFC", s)
        back = tok.decode(ids, skip_special_tokens=False)
        if back != nfc:
            bad += 1
            print("decode(encode(s)) != NFC(s) in HF itself:", repr(s)[:100], file=sys.stderr)
            continue
        row = {"text": s, "ids": ids}
        if nfc != s: row["nfc"] = nfc
        if "\x00" in s:  # C's JSON strings stop at NUL
            row["hex"] = s.encode().hex()
            if nfc != s: row["nfc_hex"] = nfc.encode().hex()
        corpus.append(row)
    os.makedirs(OUT, exist_ok=True)
    write_rows(os.path.join(OUT, "corpus.jsonl"), corpus)
    write_rows(os.path.join(OUT, "decode.jsonl"), gen_decode_cases(rng, tok))
    nbytes = sum(len(r["text"].encode()) for r in corpus)
    print(f"{len(corpus)} strings ({nbytes} bytes of text), {bad} dropped; wrote {OUT}")
    if len(corpus) < 2000: sys.exit("corpus too small")


if __name__ == "__main__":
    main()
