"""RULER and LongBench v2 files written the way the original tools write them, and the prompts
their own prediction scripts send, derived here from the originals' code (not from our readers).

Sources (read on GitHub, NVIDIA/RULER at c3f5e3b, THUDM/LongBench):
- RULER ``scripts/data/prepare.py``: ``config['template'] = model_template.format(
  task_template=task_template) + answer_prefix``; ``scripts/data/template.py`` model templates.
- RULER ``scripts/data/synthetic/niah.py`` ``generate_input_output`` / ``generate_samples``:
  single-needle wording swaps ('Some'->'A', 'are all'->'is', 'are'->'is', 'answers'->'answer',
  'numbers'->'number'), the "repeat" haystack joined by newlines, then the answer prefix is cut
  off at ``input_text.rfind(TASKS['niah']['answer_prefix'][:10])`` into its own field; the line
  is ``{index, input, outputs, length, length_w_model_temp, answer_prefix,
  token_position_answer}`` where ``index`` is (a quirk of the original) overwritten by
  ``input_text.find(answer[0])``.
- RULER ``scripts/data/synthetic/qa.py`` (``answer_prefix`` " Answer:") and older releases
  (hsiehjackson/RULER ``niah.py``) whose lines are only ``{index, input, outputs, length}``.
- RULER ``scripts/data/manifest_utils.py`` ``write_manifest``: ``json.dump(tgt, f,
  ensure_ascii=True)`` then ``'\\n'`` per line.
- RULER ``scripts/pred/call_api.py`` line 305: the prompt sent is
  ``data_point['input'] + data_point.get('answer_prefix', '')``.
- LongBench ``prompts/0shot.txt`` and LongBench v2 ``pred.py``: ``template.replace('$DOC$',
  context.strip()).replace('$Q$', question.strip()).replace('$C_A$', choice_A.strip())...``;
  ``query_llm`` truncates ``input_ids[:max_len//2] + input_ids[-max_len//2:]`` (Python parses
  ``-max_len//2`` as ``(-max_len)//2``: the tail keeps ceil(max_len / 2) tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

# RULER scripts/data/synthetic/constants.py (niah, qa) and scripts/data/template.py.
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
    "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all "
    "the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = (
    " The special magic {type_needle_v} for {query} mentioned in the provided text are"
)
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the "
    "question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nQuestion: {query}"
)
QA_ANSWER_PREFIX = " Answer:"
MODEL_TEMPLATES = {
    "base": "{task_template}",
    "meta-llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{task_template}"
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
}
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
REPEAT_HAYSTACK = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)

# LongBench prompts/0shot.txt, byte for byte (no trailing newline).
LONGBENCH_0SHOT = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n"
    "(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)


def _prepare_template(task_template: str, answer_prefix: str, model_template: str) -> str:
    """prepare.py: the model template wraps the task template, the answer prefix follows."""
    return MODEL_TEMPLATES[model_template].format(task_template=task_template) + answer_prefix


def niah_line(
    key: str, value: str, num_haystack: int, depth: int, model_template: str
) -> tuple[dict, str]:
    """One niah line (repeat haystack, one needle) and the prompt call_api.py sends."""
    template = _prepare_template(NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, model_template)
    needle = NEEDLE.format(type_needle_v="numbers", key=key, value=value)
    sentences = [REPEAT_HAYSTACK] * num_haystack
    sentences.insert(depth, needle)
    context = "\n".join(sentences)
    # num_needle_q * num_needle_v == 1: niah.py's wording swaps, on the whole template.
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    input_text = template.format(type_needle_v="number", context=context, query=key)
    cut = input_text.rfind(NIAH_ANSWER_PREFIX[:10])
    answer_prefix, input_part = input_text[cut:], input_text[:cut]
    line = {
        "index": input_part.find(value),  # niah.py overwrites the sample index this way
        "input": input_part,
        "outputs": [value],
        "length": len(input_text.split()) + 128,
        "length_w_model_temp": len(input_text.split()) + 128,
        "answer_prefix": answer_prefix,
        "token_position_answer": len(input_part[: input_part.find(value)].split()),
    }
    return line, input_part + answer_prefix


def qa_line(index: int, docs: list[str], question: str, answer: str) -> tuple[dict, str]:
    """One qa.py line (base model template) and the prompt sent."""
    template = _prepare_template(QA_TEMPLATE, QA_ANSWER_PREFIX, "base")
    context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(docs))
    input_text = template.format(context=context, query=question)
    cut = input_text.rfind(QA_ANSWER_PREFIX[:10])
    line = {
        "index": index,
        "input": input_text[:cut],
        "outputs": [answer],
        "length": len(input_text.split()) + 32,
        "length_w_model_temp": len(input_text.split()) + 32,
        "answer_prefix": input_text[cut:],
    }
    return line, input_text


def old_release_line(index: int, key: str, value: str) -> tuple[dict, str]:
    """An older RULER release's line (hsiehjackson/RULER niah.py): no answer_prefix field; the
    template then carried its answer prefix inside ``input``."""
    template = (NIAH_TEMPLATE + NIAH_ANSWER_PREFIX).replace("Some", "A").replace("are all", "is")
    template = template.replace("are", "is").replace("answers", "answer")
    needle = NEEDLE.format(type_needle_v="number", key=key, value=value)
    context = "\n".join([REPEAT_HAYSTACK, needle, REPEAT_HAYSTACK])
    input_text = template.format(type_needle_v="number", context=context, query=key)
    line = {"index": index, "input": input_text, "outputs": [value], "length": 90}
    return line, input_text


def write_ruler(path: Path, lines: list[dict]) -> None:
    """manifest_utils.write_manifest, as RULER writes it."""
    with open(path, "w", encoding="utf-8") as outfile:
        for tgt in lines:
            json.dump(tgt, outfile, ensure_ascii=True)
            outfile.write("\n")


def ruler_cases() -> list[tuple[dict, str]]:
    """A handful of RULER lines (several tasks, model templates, a non-ASCII context)."""
    return [
        niah_line("obsequious-lamp", "7340321", 4, 2, "meta-llama3"),
        # same shape: niah.py gives it the same "index" (the answer's character offset)
        niah_line("humorous-chair1", "1180044", 4, 2, "meta-llama3"),
        niah_line("caf\u00e9-\u00fcber", "1180044", 3, 0, "base"),
        qa_line(
            2, ["Paris is the capital of France.", "\u6771\u4eac is big."], "Capital?", "Paris"
        ),
        old_release_line(3, "fluffy-oboe", "5522001"),
    ]


def longbench_items() -> list[dict]:
    """LongBench v2 data.json objects (fields of the README's "Data Format"); the text fields
    carry the leading/trailing whitespace that pred.py strips."""
    return [
        {
            "_id": "66f36490821e116aacb2cc22",
            "domain": "Single-Document QA",
            "sub_domain": "Financial",
            "difficulty": "easy",
            "length": "short",
            "question": "  Which quarter had the highest revenue? \n",
            "choice_A": " Q1",
            "choice_B": "Q2 ",
            "choice_C": "\tQ3",
            "choice_D": "Q4\n",
            "answer": "C",
            "context": "\n\nRevenue by quarter: Q1 10, Q2 12, Q3 19, Q4 11.\nEnd of report.  \n",
        },
        {
            "_id": "66ebed525a08c7b9b35e1cb4",
            "domain": "Multi-Document QA",
            "sub_domain": "Academic",
            "difficulty": "hard",
            "length": "medium",
            "question": "\u8bba\u6587\u7684\u4e3b\u8981\u8d21\u732e\u662f\u4ec0\u4e48\uff1f",
            "choice_A": "A new optimizer",
            "choice_B": "A dataset with $Q$ in its name",
            "choice_C": "A proof",
            "choice_D": "None of the above",
            "answer": "B",
            "context": "Paper one/two.\n\n\u7b2c\u4e8c\u7bc7\u8bba\u6587\u3002 Caf\u00e9 na\u00efve r\u00e9sum\u00e9.",
        },
        {
            "_id": "671b3cabbb02136c067d5252",
            "domain": "Code Repository Understanding",
            "sub_domain": "Code repo QA",
            "difficulty": "hard",
            "length": "long",
            "question": "What does f return?",
            "choice_A": "1",
            "choice_B": "2",
            "choice_C": "3",
            "choice_D": "4",
            "answer": "A",
            "context": "def f():\n    return 1\n" * 40,
        },
    ]


def longbench_prompt(item: dict, max_len: int = 0) -> str:
    """pred.py: 0shot.txt filled with the stripped fields, then query_llm's middle cut on token
    ids; with the byte tokenizer the ids are the UTF-8 bytes (the cases here cut ASCII only)."""
    prompt = (
        LONGBENCH_0SHOT.replace("$DOC$", item["context"].strip())
        .replace("$Q$", item["question"].strip())
        .replace("$C_A$", item["choice_A"].strip())
        .replace("$C_B$", item["choice_B"].strip())
        .replace("$C_C$", item["choice_C"].strip())
        .replace("$C_D$", item["choice_D"].strip())
    )
    input_ids = list(prompt.encode("utf-8"))
    if max_len and len(input_ids) > max_len:
        input_ids = input_ids[: max_len // 2] + input_ids[-max_len // 2 :]
        prompt = bytes(input_ids).decode("utf-8")
    return prompt


def write_longbench_json(path: Path, items: list[dict]) -> None:
    """data.json as published: one JSON list (UTF-8, non-ASCII kept)."""
    path.write_text(json.dumps(items, ensure_ascii=False, indent=4), encoding="utf-8")


def write_longbench_jsonl(path: Path, items: list[dict]) -> None:
    """The same objects one per line as pandas' record-lines export writes them (what
    ``datasets.Dataset.to_json`` uses): ASCII-escaped, ``/`` written as ``\\/``."""
    import pandas as pd

    pd.DataFrame(items).to_json(path, orient="records", lines=True)
