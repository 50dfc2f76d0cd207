"""SYNTHETIC sample inputs shipped in ``assets/dsa`` (regenerate: ``python -m
studio_backend.dsa.workloads.samples assets/dsa``). Seeded; every file says it is synthetic."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TOPICS = ["rust borrow checker", "sourdough starter", "KV cache paging", "tax forms", "tide tables"]
ASKS = ["Explain {t} briefly.", "What is the most common mistake with {t}?",
        "Give me a checklist for {t}.", "How would you test {t}?"]  # fmt: skip


def sharegpt_sample(n: int = 6, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        conv = []
        for turn in range(rng.randint(2, 3)):
            ask = ASKS[(i + turn) % len(ASKS)].format(t=topic)
            conv.append({"from": "human", "value": ask + " " + "Please be concrete. " * (turn + 1)})
            words = [
                rng.choice(["blocks", "steps", "cache", "prefix", "layer", "token"])
                for _ in range(30)
            ]
            conv.append({"from": "gpt", "value": f"About {topic}: " + " ".join(words) + "."})
        out.append({"id": f"synthetic-{seed}-{i}", "synthetic": True, "conversations": conv})
    return out


def burstgpt_sample(n: int = 12, seed: int = 0) -> str:
    rng = random.Random(seed)
    rows = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    t = 0.0
    for _ in range(n):
        t += rng.expovariate(4.0)  # bursty-ish Poisson arrivals, SYNTHETIC
        req, resp = rng.randint(40, 400), rng.randint(2, 12)
        rows.append(f"{t:.3f},ChatGPT,{req},{resp},{req + resp},Conversation log")
    return "\n".join(rows) + "\n"


def mooncake_sample(n: int = 40, seed: int = 0) -> str:
    """Mooncake/Bailian-style JSONL: requests share a system-prompt prefix of hash blocks."""
    rng = random.Random(seed)
    lines = []
    next_id = 100
    chats: dict[int, list[int]] = {}
    for i in range(n):
        chat = rng.randrange(8)
        history = chats.get(chat, [0, 1, 2, 3])  # blocks 0-3: the shared system prompt
        new = list(range(next_id, next_id + rng.randint(1, 4)))
        next_id += len(new)
        ids = history + new
        chats[chat] = ids
        rec = {"timestamp": i * 250, "input_length": 16 * len(ids), "output_length": rng.randint(5, 60),
               "hash_ids": ids, "chat_id": chat, "parent_chat_id": -1, "turn": len(ids) - 3,
               "type": "synthetic"}  # fmt: skip
        lines.append(json.dumps(rec))
    return "\n".join(lines) + "\n"


def ruler_sample(n: int = 4, seed: int = 0) -> str:
    """RULER-format JSONL (niah-like: index, input, outputs, length, answer_prefix), SYNTHETIC."""
    rng = random.Random(seed)
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. "
    lines = []
    for i in range(n):
        key, num = f"synthetic-key-{i}", str(rng.randrange(10**6, 10**7))
        hay = [filler] * 12
        hay.insert(rng.randrange(13), f"One of the special magic numbers for {key} is: {num}. ")
        text = ("Some special magic numbers are hidden within the following text. Make sure to"
                " memorize it. I will quiz you about the numbers afterwards.\n" + "".join(hay)
                + f"\nWhat is the special magic number for {key} mentioned in the provided text?")  # fmt: skip
        rec = {"index": i, "input": text, "outputs": [num], "length": len(text.encode()),
               "answer_prefix": f" The special magic number for {key} mentioned in the provided"
               " text is", "synthetic": True}  # fmt: skip
        lines.append(json.dumps(rec))
    return "\n".join(lines) + "\n"


def longbench_v2_sample(n: int = 3, seed: int = 0) -> list[dict]:
    """LongBench v2 data.json items (a JSON list), SYNTHETIC."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        vals = [rng.randint(1, 99) for _ in range(4)]
        ctx = " ".join(f"Region {c} sold {v} units." for c, v in zip("ABCD", vals, strict=True))
        out.append({
            "_id": f"synthetic-{seed}-{i}", "domain": "Long Structured Data Understanding",
            "sub_domain": "Table QA", "difficulty": "easy", "length": "short",
            "question": "Which region sold the most units?", "choice_A": "A", "choice_B": "B",
            "choice_C": "C", "choice_D": "D", "answer": "ABCD"[vals.index(max(vals))],
            "context": (ctx + " ") * 8, "synthetic": True,
        })  # fmt: skip
    return out


def write_samples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "sharegpt_sample.json": json.dumps(sharegpt_sample(), indent=1) + "\n",
        "burstgpt_sample.csv": burstgpt_sample(),
        "mooncake_sample.jsonl": mooncake_sample(),
        "ruler_sample.jsonl": ruler_sample(),
        "longbench_v2_sample.json": json.dumps(longbench_v2_sample(), indent=1) + "\n",
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / n for n in files]


if __name__ == "__main__":
    for p in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "assets/dsa")):
        print(p)
