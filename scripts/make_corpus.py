"""Writes the small corpus gpupool ships (examples/corpus/): generated, public-domain text.

Deterministic (seeded), so the committed files can be regenerated: python scripts/make_corpus.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ada", "Bram", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca",
         "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tess"]
PLACES = ["the harbour", "the old mill", "the market square", "the river bank", "the library", "the orchard",
          "the lighthouse", "the mountain pass", "the railway station", "the village school", "the bakery",
          "the forest edge", "the observatory", "the workshop", "the bridge"]
THINGS = ["a lantern", "a map", "a letter", "a small boat", "a clock", "a basket of apples", "a violin",
          "a compass", "a wooden box", "a loaf of bread", "a kite", "a notebook", "a telescope", "a key"]
VERBS = ["found", "carried", "repaired", "painted", "lost", "shared", "studied", "sold", "bought", "hid"]
TIMES = ["In the morning", "At noon", "Late in the evening", "On a cold winter day", "Before sunrise",
         "After the storm", "On the first day of spring", "During the long summer", "One quiet night"]
FEEL = ["happy", "tired", "curious", "worried", "proud", "calm", "surprised", "hopeful"]
WEATHER = ["the wind was strong", "rain fell softly", "the sky was clear", "snow covered the roofs",
           "fog rolled in from the sea", "the sun was warm"]
FACTS = [("water", "boils at one hundred degrees Celsius at sea level"),
         ("the moon", "circles the earth about once every twenty seven days"),
         ("a week", "has seven days"), ("a triangle", "has three sides"), ("bees", "make honey from nectar"),
         ("the sun", "rises in the east"), ("ice", "is frozen water"), ("a year", "has twelve months"),
         ("plants", "need light to grow"), ("a square", "has four equal sides")]


def sentence(r: random.Random) -> str:
    n, p, t = r.choice(NAMES), r.choice(PLACES), r.choice(THINGS)
    subj, fact = r.choice(FACTS)
    forms = [
        f"{r.choice(TIMES)}, {n} {r.choice(VERBS)} {t} near {p}.",
        f"{n} walked to {p} because {r.choice(WEATHER)}.",
        f"{n} felt {r.choice(FEEL)} when {r.choice(NAMES)} {r.choice(VERBS)} {t}.",
        f"At {p}, {n} and {r.choice(NAMES)} talked about {t}.",
        f"{r.choice(TIMES)}, {r.choice(WEATHER)} and {n} stayed at {p}.",
        f"Everyone knows that {subj} {fact}.",
    ]
    return r.choice(forms)


def story(r: random.Random) -> str:
    return " ".join(sentence(r) for _ in range(r.randint(4, 9)))


def qa(r: random.Random) -> dict[str, str]:
    subj, fact = r.choice(FACTS)
    n, t, p = r.choice(NAMES), r.choice(THINGS), r.choice(PLACES)
    pairs = [
        (f"What is true about {subj}?", f"{subj.capitalize()} {fact}."),
        (f"Where did {n} find {t}?", f"{n} found {t} near {p}."),
        (f"Tell me something about {subj}.", f"Here is a fact: {subj} {fact}."),
    ]
    q, a = r.choice(pairs)
    return {"text": f"Question: {q}\nAnswer: {a}"}


def main() -> None:
    r = random.Random(20261127)
    out = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    stories = [story(r) for _ in range(900)]
    stories += stories[:40]  # a few exact duplicates, which the pipeline's de-duplication drops
    r.shuffle(stories)
    (out / "stories.txt").write_text("\n\n".join(stories) + "\n", encoding="utf-8")
    rows = [qa(r) for _ in range(1500)]
    (out / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    write_sft_sets(out, rows)
    (out / "prompts.txt").write_text("Question: What is true about the moon?\nAnswer:\n"
                                     "Ada walked to\nIn the morning,\n", encoding="utf-8")


def write_sft_sets(out: Path, rows: list[dict[str, str]]) -> None:
    """The question/answer rows as prompt/response pairs and as chat conversations (fine-tuning)."""
    pairs, chats = [], []
    for row in rows:
        q, a = row["text"].split("\nAnswer: ")
        question = q.removeprefix("Question: ")
        pairs.append({"prompt": f"Question: {question}\nAnswer:", "response": f" {a}"})
        chats.append({"messages": [{"role": "system", "content": "Answer in one sentence."},
                                   {"role": "user", "content": question},
                                   {"role": "assistant", "content": a}]})
    (out / "qa_pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in pairs), encoding="utf-8")
    (out / "chat.jsonl").write_text("".join(json.dumps(x) + "\n" for x in chats), encoding="utf-8")


if __name__ == "__main__":
    main()
