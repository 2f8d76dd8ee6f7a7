"""lm-eval-harness against the server, offline: its `local-completions` model runs a
loglikelihood (multiple-choice) task and a generate_until task that this test writes itself
(local JSON files, no hub). The tokenizer is the server's own (`tokenizer_backend=remote`:
GET /tokenizer_info, POST /tokenize, /detokenize), so nothing is downloaded; requests go as
token-id lists in batches of 4, which exercises completions batches and echo + logprobs.
lm-eval's per-sample numbers are then checked against the server's answers to the same
questions asked directly."""

import json
import os

import pytest

from conftest import API_KEY

lm_eval = pytest.importorskip("lm_eval")

QUESTIONS = [
    {"question": "The capital of France is", "choices": [" Paris", " Rome", " Berlin"],
     "answer": 0},
    {"question": "Two plus two equals", "choices": [" four", " five"], "answer": 0},
    {"question": "The sky is", "choices": [" blue", " green", " made of cheese"], "answer": 0},
    {"question": "Water is", "choices": [" wet", " dry"], "answer": 0},
    {"question": "1, 2, 3,", "choices": [" 4", " 5"], "answer": 0},
]


def write_tasks(d):
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
              "test_split: test\n")
    (d / "tiny_ll.yaml").write_text(
        "task: tiny_ll\n" + common + "output_type: multiple_choice\n"
        "doc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{answer}}\"\ntarget_delimiter: \"\"\n"
        "metric_list:\n  - metric: acc\n")
    (d / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "output_type: generate_until\n"
        "doc_to_text: \"{{question}}\"\ndoc_to_target: \"{{choices[answer]}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")


def test_lm_eval_local_completions(server, client, http, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(v, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    write_tasks(tmp_path)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="local-completions",
        model_args=(f"base_url={server.url}/v1/completions,model=tiny,tokenizer_backend=remote,"
                    f"auth_token={API_KEY},tokenized_requests=True,batch_size=4,num_concurrent=1,"
                    "max_retries=1"),
        tasks=["tiny_ll", "tiny_gen"], task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True)
    assert set(out["results"]) == {"tiny_ll", "tiny_gen"}
    assert 0.0 <= out["results"]["tiny_ll"]["acc,none"] <= 1.0

    # loglikelihood: lm-eval's sum over the continuation = the server's own echo logprobs
    def tok(text):
        return http.post("/tokenize", json={"prompt": text}).json()["tokens"]

    for s in out["samples"]["tiny_ll"]:
        q = s["doc"]
        for choice, resp in zip(q["choices"], s["resps"]):
            ctx, cont = tok(q["question"]), tok(q["question"] + choice)
            r = client.completions.create(model="tiny", prompt=cont, max_tokens=0, echo=True,
                                          logprobs=1, temperature=0)
            want = sum(r.choices[0].logprobs.token_logprobs[len(ctx):])
            got = resp[0][0]
            assert abs(got - want) < 1e-3, (q, choice, got, want)
    # generate_until: lm-eval's text = a greedy completion with the same stop
    for s in out["samples"]["tiny_gen"]:
        r = client.completions.create(model="tiny", prompt=tok(s["doc"]["question"]),
                                      max_tokens=6, temperature=0, stop=["\n"], seed=1234)
        assert s["resps"][0][0] == r.choices[0].text
