"""valley-server on the tokenizer file sets a model folder can have: the slow files only
(vocab.json, merges.txt, ...; as the release ships them) with the 10 Valley added tokens,
tokenizer.json without them, and neither. Checks the start-up log (which files, the ids the
image markers <im_start>/<im_end> tokenize to, a warning when wrapped images would not get
single added ids) and the start-up error naming the files looked for.
"""

import shutil
import subprocess

import pytest

from conftest import API_KEY, Server, binary, fixtures_dir

TINY = ["--seed", "7", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
        "--head-dim", "16", "--ffn", "32", "--vit-depth", "1", "--vit-dim", "32",
        "--vit-heads", "2", "--merger-hidden", "32"]


def make(tmp_path_factory, name, *flags):
    tok = fixtures_dir() / "qwen3-tokenizer"
    if not tok.is_dir():
        pytest.skip("needs the Qwen3 tokenizer fixture")
    out = tmp_path_factory.mktemp("tokfiles") / name
    subprocess.run([str(binary("valley-make-model")), "--out", str(out), "--tokenizer", str(tok),
                    *TINY, *flags], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=300)
    return out


def start_log(model, *extra):
    s = Server(model, ["--api-key", API_KEY, *extra])
    try:
        return s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_slow_files_with_valley_tokens(tmp_path_factory):
    model = make(tmp_path_factory, "slow", "--slow-tokenizer", "--valley-tokens")
    assert not (model / "tokenizer.json").exists()
    log = start_log(model, "--image-start-end-tokens", "on")
    assert "slow files vocab.json + merges.txt + tokenizer_config.json + added_tokens.json + " \
           "special_tokens_map.json (151679 ids, 36 added)" in log
    assert "image markers <im_start> = [151669], <im_end> = [151670] (images wrapped)" in log
    assert "not single added tokens" not in log


def test_markers_missing_from_tokenizer_json_warns_when_wrapping(tmp_path_factory):
    model = make(tmp_path_factory, "json")
    log = start_log(model, "--image-start-end-tokens", "on")
    assert "/tokenizer.json (151669 ids, 26 added)" in log
    assert "image markers <im_start> = [27, 318, 4906, 29]" in log
    assert "not single added tokens in this tokenizer" in log
    log = start_log(model, "--image-start-end-tokens", "off")
    assert "(images not wrapped)" in log and "not single added tokens" not in log


def test_no_tokenizer_files_is_a_start_up_error(tmp_path_factory):
    model = make(tmp_path_factory, "none", "--slow-tokenizer")
    bare = model.parent / "bare"
    shutil.copytree(model, bare)
    (bare / "vocab.json").unlink()
    with pytest.raises(RuntimeError) as e:
        Server(bare, ["--api-key", API_KEY])
    assert "looked for tokenizer.json, then vocab.json + merges.txt: vocab.json is missing" \
        in str(e.value)
