"""Raw TFDS examples to T5-style text examples.

Each preprocessor takes one decoded TFDS example (a dict of numpy values, bytes for
text) and returns a list of text examples: usually one, none for an example that
cannot be used (an unlabelled row), or several for ReCoRD training (one per gold
answer, as T5 does). Inputs start with the task prefix; label tasks emit the fixed
label word of their class. Formats follow T5 / ATTEMPT so numbers are comparable.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

Raw = dict[str, Any]
Example = dict[str, Any]
Preprocessor = Callable[[Raw, bool], list[Example]]


def text(v: Any) -> str:
    """A TFDS text value (bytes or str) as a clean one-line string."""
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    return " ".join(str(v).split())


def _label(raw: Raw, label_words: Sequence[str]) -> int | None:
    """The class id of a raw example, or None when it is unlabelled (-1) or out of range."""
    y = int(raw["label"])
    return y if 0 <= y < len(label_words) else None


def pair_classifier(prefix: str, fields: Sequence[tuple[str, str]], label_words: Sequence[str]) -> Preprocessor:
    """``"{prefix} {name1}: {x1} {name2}: {x2}" -> label word`` for GLUE-style classification."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        y = _label(raw, label_words)
        if y is None:
            return []
        body = " ".join(f"{name}: {text(raw[key])}" for name, key in fields)
        return [{"inputs": f"{prefix} {body}", "targets": label_words[y], "label": y}]

    return fn


def stsb(raw: Raw, is_train: bool) -> list[Example]:
    """STS-B as text regression: the 0-5 score rounded to the nearest 0.2, printed with one decimal (T5)."""
    score = float(raw["label"])
    rounded = round(score * 5) / 5
    return [{"inputs": f"stsb sentence1: {text(raw['sentence1'])} sentence2: {text(raw['sentence2'])}",
             "targets": f"{rounded:.1f}", "label": score}]


_TAGS = re.compile(r"<[^>]+>")


def multirc(label_words: Sequence[str]) -> Preprocessor:
    """One example per (question, answer option); ``group`` ties options to their question for EM."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        y = _label(raw, label_words)
        if y is None:
            return []
        idx = raw["idx"]
        paragraph = text(_TAGS.sub(" ", text(raw["paragraph"])))
        return [{"inputs": f"multirc question: {text(raw['question'])} answer: {text(raw['answer'])} "
                           f"paragraph: {paragraph}",
                 "targets": label_words[y], "label": y,
                 "group": f"{int(idx['paragraph'])}-{int(idx['question'])}"}]

    return fn


def _mark_span(words: list[str], index: int, span: str, mark: str) -> list[str]:
    """Wraps the words of ``span`` starting at word ``index`` in ``mark`` (T5's WSC marking).

    Falls back to the first occurrence of the span's first word when the index does not
    point at it; leaves the text unchanged when the span is absent.
    """
    span_words = span.split()
    n = max(len(span_words), 1)
    if not (0 <= index < len(words) and words[index:index + n] == span_words):
        first = span_words[0] if span_words else None
        index = next((i for i, w in enumerate(words) if first is not None and w == first), -1)
        if index < 0:
            return words
    return words[:index] + [mark] + words[index:index + n] + [mark] + words[index + n:]


def wsc(label_words: Sequence[str]) -> Preprocessor:
    """WSC (fixed): the candidate noun in ``*`` and the pronoun in ``#``; the label says if they co-refer."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        y = _label(raw, label_words)
        if y is None:
            return []
        words = text(raw["text"]).split()
        i1, i2 = int(raw["span1_index"]), int(raw["span2_index"])
        s1, s2 = text(raw["span1_text"]), text(raw["span2_text"])
        marked = _mark_span(words, i1, s1, "*")
        shift = 2 if (len(marked) > len(words) and 0 <= i1 < i2) else 0
        marked = _mark_span(marked, i2 + shift, s2, "#")
        return [{"inputs": f"wsc text: {' '.join(marked)}", "targets": label_words[y], "label": y}]

    return fn


def wic(label_words: Sequence[str]) -> Preprocessor:
    """WiC: does ``word`` mean the same in both sentences."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        y = _label(raw, label_words)
        if y is None:
            return []
        return [{"inputs": f"wic sentence1: {text(raw['sentence1'])} sentence2: {text(raw['sentence2'])} "
                           f"word: {text(raw['word'])}",
                 "targets": label_words[y], "label": y}]

    return fn


def record(raw: Raw, is_train: bool) -> list[Example]:
    """ReCoRD as generation (T5): fill ``@placeholder``; train has one example per gold answer.

    Evaluation examples keep all gold answers in ``answers`` for max-over-answers
    scoring. Queries without any gold answer are skipped.
    """
    raw_passage = raw["passage"]
    if isinstance(raw_passage, bytes):
        raw_passage = raw_passage.decode("utf-8", errors="replace")
    raw_passage = re.sub(r"([.?!\"'])\s*@highlight\s*", r"\1 ", str(raw_passage))
    passage = text(re.sub(r"\s*@highlight\s*", ". ", raw_passage))
    entities = sorted({text(e) for e in raw["entities"]})
    answers = list(dict.fromkeys(text(a) for a in raw["answers"] if text(a)))
    if not answers:
        return []
    inputs = f"record query: {text(raw['query'])} entities: {', '.join(entities)} passage: {passage}"
    if is_train:
        return [{"inputs": inputs, "targets": a, "answers": answers} for a in answers]
    return [{"inputs": inputs, "targets": answers[0], "answers": answers}]


def _answer_texts(raw: Raw) -> list[str]:
    """Gold answers of SQuAD (``answers/text``) or MRQA (``answers``), de-duplicated, order kept."""
    answers = raw["answers"]
    if isinstance(answers, dict):
        answers = answers["text"]
    return list(dict.fromkeys(t for t in (text(a) for a in answers) if t))


def extractive_qa(prefix: str) -> Preprocessor:
    """``"{prefix} question: q context: c" -> first gold answer``; all answers kept for scoring."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        answers = _answer_texts(raw)
        if not answers:
            return []
        return [{"inputs": f"{prefix} question: {text(raw['question'])} context: {text(raw['context'])}",
                 "targets": answers[0], "answers": answers}]

    return fn


def winogrande(label_words: Sequence[str]) -> Preprocessor:
    """WinoGrande: which option fills the blank ``_``; targets are the option numbers."""

    def fn(raw: Raw, is_train: bool) -> list[Example]:
        y = _label(raw, label_words)
        if y is None:
            return []
        return [{"inputs": f"winogrande sentence: {text(raw['sentence'])} option1: {text(raw['option1'])} "
                           f"option2: {text(raw['option2'])}",
                 "targets": label_words[y], "label": y}]

    return fn
