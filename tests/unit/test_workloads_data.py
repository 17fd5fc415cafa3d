"""Data at scale: streamed sources (text, jsonl, parquet, arrow through `datasets`), whitespace kept,
BOS/EOS, pre-tokenised memory-mapped shards read by row, SFT loss masks, packing, hub errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from workloads.data.corpus import DataError, clean, records  # noqa: E402
from workloads.data.pipeline import load_splits  # noqa: E402
from workloads.data.tokenizer import TokenizerMismatch, check_matches_model, train_tokenizer  # noqa: E402
from workloads.hub import HubError, resolve_model  # noqa: E402
from workloads.spec_parts import DatasetSpec  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


@pytest.fixture(scope="module")
def tok():
    docs = (row["text"] for _, row in records(str(CORPUS / "stories.txt")))
    return train_tokenizer(docs, 600)


def _targets(batch, tok) -> str:
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return tok.decode([t for t, lab in zip(ids, labels) if lab != -100], skip_special_tokens=False)


def test_clean_keeps_whitespace_and_drops_control_characters() -> None:
    code = "def f(x):\n    return  x\t# two spaces\r\n"
    assert clean(code + "\x07") == "def f(x):\n    return  x\t# two spaces"


def test_text_documents_keep_indentation(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first doc\n    indented line\n\n\nsecond  doc\n")
    assert [r["text"] for _, r in records(str(tmp_path))] == ["first doc\n    indented line\n", "second  doc\n"]


def test_jsonl_parquet_and_arrow_stream_through_datasets(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"row {i}"} for i in range(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.Table.from_pylist(rows))
    got = [(Path(f).suffix, r["text"]) for f, r in records(str(tmp_path))]
    assert got == [(s, f"row {i}") for s in (".jsonl", ".arrow", ".parquet") for i in range(3)] or \
        sorted(got) == sorted((s, f"row {i}") for s in (".jsonl", ".arrow", ".parquet") for i in range(3))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match="cannot read .*bad.jsonl as json"):
        list(records(str(tmp_path / "bad.jsonl")))
    with pytest.raises(DataError, match="does not exist"):
        list(records(str(tmp_path / "missing.txt")))


def test_pretrain_shards_have_bos_eos_and_restart_positions(tok, tmp_path: Path) -> None:
    ds = DatasetSpec(min_chars=1)
    train, val, stats = load_splits(str(CORPUS / "stories.txt"), ds, tok, 64, str(tmp_path))
    assert stats["kept"] == 900 and stats["dropped_duplicates"] == 40  # the corpus ships 40 exact copies
    assert len(train) * 64 >= stats["tokens"] * 0.9 and len(val) > 0
    ids = [train.row(i)[0] for i in range(len(train))]
    flat = [t for row in ids for t in row.tolist()]
    assert flat.count(tok.bos_token_id) >= 850 and flat.count(tok.eos_token_id) >= 850
    b = train.batch(list(range(len(train))))
    for row, pos, lab in zip(b["input_ids"], b["position_ids"], b["labels"]):
        starts = [i for i, t in enumerate(row.tolist()) if t == tok.bos_token_id]
        for s in starts:
            assert pos[s] == 0 and lab[s] == -100  # a document's first token is never a target
    again = load_splits(str(CORPUS / "stories.txt"), ds, tok, 64, str(tmp_path))[2]
    assert again["shards"] == stats["shards"]  # built once, reused


def test_prompt_response_trains_on_the_response_only(tok, tmp_path: Path) -> None:
    ds = DatasetSpec(style="prompt_response", dedupe=False, min_chars=1)
    train, _, _ = load_splits(str(CORPUS / "qa_pairs.jsonl"), ds, tok, 256, str(tmp_path), layout="packed")
    b = train.batch([0])
    text = tok.decode(b["input_ids"][0].tolist())
    targets = _targets(b, tok)
    assert "Question:" in text and "Question:" not in targets and "Answer:" not in targets
    assert targets.count(tok.eos_token) == text.count(tok.eos_token) >= 2  # several examples, each ends trained
    positions = b["position_ids"][0].tolist()
    assert positions.count(0) >= 3  # packed examples (and the padding) restart their positions


def test_chat_messages_use_the_template_and_train_on_assistant_turns(tok, tmp_path: Path) -> None:
    ds = DatasetSpec(style="chat", dedupe=False, min_chars=1)
    train, _, _ = load_splits(str(CORPUS / "chat.jsonl"), ds, tok, 256, str(tmp_path), layout="single")
    b = train.batch([0])
    text, targets = tok.decode(b["input_ids"][0].tolist()), _targets(b, tok)
    assert text.startswith("<s>system\nAnswer in one sentence.</s>\n<s>user\n")
    row = json.loads((CORPUS / "chat.jsonl").read_text().splitlines()[1])  # document 0 is validation
    assert targets.startswith(row["messages"][2]["content"] + "</s>") and "user" not in targets
    no_template = DatasetSpec(style="chat", chat_template=None)
    tok2 = train_tokenizer(["a b c"], 300)
    tok2.chat_template = None
    with pytest.raises(DataError, match="no chat template; give dataset.chat_template"):
        load_splits(str(CORPUS / "chat.jsonl"), no_template, tok2, 64, str(tmp_path / "x"))


def test_packing_never_splits_an_example(tok, tmp_path: Path) -> None:
    ds = DatasetSpec(style="prompt_response", dedupe=False, min_chars=1)
    train, _, _ = load_splits(str(CORPUS / "qa_pairs.jsonl"), ds, tok, 96, str(tmp_path), layout="packed")
    for i in range(min(len(train), 50)):
        ids, _ = train.row(i)
        row = ids.tolist()
        # every row starts an example and every example in it ends with EOS before padding starts
        assert row[0] == tok.bos_token_id
        body = row[: row.index(tok.pad_token_id)] if tok.pad_token_id in row else row
        assert body[-1] == tok.eos_token_id


def test_tokenizer_that_does_not_fit_the_model_is_an_error(tok, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 100, "eos_token_id": tok.eos_token_id}))
    with pytest.raises(TokenizerMismatch, match="600 tokens but the model's embedding has 100 rows"):
        check_matches_model(tok, str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 1000, "eos_token_id": 7}))
    with pytest.raises(TokenizerMismatch, match="eos_token_id is 1 but the model's is 7"):
        check_matches_model(tok, str(tmp_path))


def test_hub_ids_resolve_through_the_cache_or_fail_naming_the_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="'acme/llama-7b' is not a directory on this node, and the hub id "
                                       "'acme/llama-7b' is not in .*cache"):
        resolve_model("acme/llama-7b", "base_model", cache=str(tmp_path / "cache"))
    with pytest.raises(HubError, match="/abs/missing does not exist on this node; run first: gpupool submit x"):
        resolve_model("/abs/missing", "base_model", needs="gpupool submit x")
    # a model already in the hub cache (the layout huggingface_hub writes) resolves offline
    snap = tmp_path / "cache" / "models--acme--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "cache" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "cache" / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    assert resolve_model("acme/tiny", "base_model", cache=str(tmp_path / "cache")) == str(snap)
