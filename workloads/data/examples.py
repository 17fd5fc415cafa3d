"""Rows -> token examples with a loss mask: plain text, prompt/response, or chat ``messages``.

Text trains on every token; prompt/response and chat train on the responses only (the
assistant turns, with their end-of-turn tokens). Chat goes through the tokenizer's chat
template (or ``dataset.chat_template``): each assistant turn's characters are found by
rendering the conversation up to it, and the tokens inside them are the ones that train.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

from workloads.data.corpus import DataError, clean, dedupe_key, field_of

Example = tuple[list[int], list[int]]  # token ids, 1 where the token is a training target
TEXT_BATCH = 256  # documents tokenised per call of a fast tokenizer


def _special(tok: Any, ds: Any) -> tuple[list[int], list[int]]:
    bos = [tok.bos_token_id] if ds.add_bos and tok.bos_token_id is not None else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    return bos, eos


def chat_template_of(tok: Any, ds: Any) -> str:
    template = ds.chat_template or getattr(tok, "chat_template", None)
    if not template:
        raise DataError("dataset.style chat: the tokenizer has no chat template; give dataset.chat_template")
    return template


def chat_example(tok: Any, messages: list[dict[str, str]], template: str, where: str) -> Example:
    """Tokens of a rendered conversation; the assistant turns (and their end tokens) train."""
    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return tok.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)

    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
        raise DataError(f"data: {where}: every message needs a role and a string content")
    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = len(render(messages[:i], True)), len(render(messages[: i + 1], False))
        if not full.startswith(render(messages[: i + 1], False)):
            raise DataError("dataset.chat_template: rendering a conversation is not prefix-stable; "
                            "cannot tell which tokens are the assistant's")
        spans.append((start, end))
    if not spans:
        raise DataError(f"data: {where}: a conversation without an assistant message trains nothing")
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def examples(rows: Iterable[tuple[str, dict[str, Any]]], tok: Any, ds: Any, stats: Counter) -> Iterator[Example]:
    """Tokenised, filtered (``min_chars``), de-duplicated examples of ``rows`` with loss masks."""
    bos, eos = _special(tok, ds)
    seen: set[bytes] = set()
    template = chat_template_of(tok, ds) if ds.style == "chat" else None
    pending: list[str] = []

    def keep(text: str) -> bool:
        stats["rows"] += 1
        if len(text.strip()) < ds.min_chars:
            stats["dropped_short"] += 1
            return False
        if ds.dedupe:
            key = dedupe_key(text)
            if key in seen:
                stats["dropped_duplicates"] += 1
                return False
            seen.add(key)
        stats["kept"] += 1
        return True

    def flush() -> Iterator[Example]:
        for ids in tok(pending, add_special_tokens=False)["input_ids"]:
            yield bos + ids + eos, [0] * len(bos) + [1] * (len(ids) + len(eos))
        pending.clear()

    for n, (where, row) in enumerate(rows):
        if ds.max_documents and stats["kept"] >= ds.max_documents:
            break
        at = f"{where} row {n + 1}"
        if ds.style == "text":
            text = clean(field_of(row, ds.text_field, at))
            if keep(text):
                pending.append(text)
                if len(pending) >= TEXT_BATCH:
                    yield from flush()
        elif ds.style == "prompt_response":
            prompt, response = field_of(row, ds.prompt_field, at), field_of(row, ds.response_field, at)
            if keep(prompt + response):
                p = tok(prompt, add_special_tokens=False)["input_ids"]
                r = tok(response, add_special_tokens=False)["input_ids"]
                yield bos + p + r + eos, [0] * (len(bos) + len(p)) + [1] * (len(r) + len(eos))
        else:
            messages = field_of(row, ds.messages_field, at, list)
            if keep("\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))):
                yield chat_example(tok, messages, template or "", at)
    if pending:
        yield from flush()
