"""Task metrics on raw prediction strings, numpy only.

All scores are percentages (0-100), as in the paper tables. Every scorer first
postprocesses the raw strings and then computes its metric. A prediction that
cannot be parsed (a word that is not a label, text where a number is expected)
always counts as *wrong*; no scorer ever raises on a prediction, because a
half-trained model produces arbitrary text and evaluation must still finish.

How "wrong" is made concrete per metric:
- label tasks: an unparseable prediction gets the class id -1, which never equals
  the gold id. For the binary metrics (F1, MCC) it is replaced by the *opposite*
  of the gold class, so it is both a wrong answer and never a free true negative;
- regression (STS-B): it is replaced by the end of the 0-5 range farthest from the
  gold score;
- QA: it is compared as text, so it simply does not match.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------- basic metrics


def accuracy(gold: Sequence, pred: Sequence) -> float:
    """Percentage of positions where ``pred == gold``."""
    gold, pred = list(gold), list(pred)
    if not gold:
        return 0.0
    return 100.0 * float(np.mean([g == p for g, p in zip(gold, pred)]))


def binary_f1(gold: Sequence[int], pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's F1 for MRPC and QQP), as a percentage."""
    g = np.asarray(gold) == positive
    p = np.asarray(pred) == positive
    tp = float(np.sum(g & p))
    fp = float(np.sum(~g & p))
    fn = float(np.sum(g & ~p))
    if tp == 0:
        return 0.0
    return 100.0 * 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004), as a percentage; 0 when undefined."""
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    if gold.size == 0:
        return 0.0
    classes = np.unique(np.concatenate([gold, pred]))
    gi = np.searchsorted(classes, gold)
    pi = np.searchsorted(classes, pred)
    cm = np.zeros((len(classes), len(classes)), np.float64)
    np.add.at(cm, (gi, pi), 1.0)
    t = cm.sum(axis=1)  # true counts per class
    p = cm.sum(axis=0)  # predicted counts per class
    c = np.trace(cm)
    s = cm.sum()
    denom = np.sqrt((s * s - np.dot(p, p)) * (s * s - np.dot(t, t)))
    if denom == 0:
        return 0.0
    return 100.0 * float((c * s - np.dot(p, t)) / denom)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation as a percentage; 0 when either side is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if denom == 0:
        return 0.0
    return 100.0 * float(np.dot(xc, yc) / denom)


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks starting at 1, ties get their average rank (scipy's ``rankdata`` default)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation as a percentage (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


# ----------------------------------------------------------------------------- SQuAD-style text


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop punctuation and articles, collapse spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(gold: str, pred: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(gold) == normalize_answer(pred))


def token_f1(gold: str, pred: str) -> float:
    """SQuAD token-overlap F1 of one prediction against one gold answer (0-1)."""
    g = normalize_answer(gold).split()
    p = normalize_answer(pred).split()
    if not g or not p:
        return float(g == p)
    common = collections.Counter(g) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(p)
    recall = same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: Sequence[Sequence[str]], preds: Sequence[str]) -> dict[str, float]:
    """EM and F1 (percent), each the max over the gold answers of its example (SQuAD, ReCoRD, MRQA)."""
    if not preds:
        return {"em": 0.0, "f1": 0.0}
    em, f1 = [], []
    for answers, pred in zip(golds, preds):
        answers = list(answers) or [""]
        em.append(max(exact_match(a, pred) for a in answers))
        f1.append(max(token_f1(a, pred) for a in answers))
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


# ----------------------------------------------------------------------------- postprocessing


def parse_label(text: str, label_words: Sequence[str]) -> int:
    """Class id of a predicted label word, or -1 when it is none of them (stripped, case-insensitive)."""
    t = " ".join(str(text).split()).lower()
    for i, w in enumerate(label_words):
        if t == w.lower():
            return i
    return -1


def parse_float(text: str) -> float | None:
    """A float from a prediction string, or None when it is not a number."""
    try:
        v = float(str(text).strip())
    except ValueError:
        return None
    return v if np.isfinite(v) else None


def _target_text(t) -> str:
    """The gold string of a target given as a string or as a text example dict."""
    if isinstance(t, Mapping):
        return str(t["targets"])
    return str(t)


def _target_answers(t) -> list[str]:
    """All gold answers of a target: an example's ``answers`` extra, a list, or one string."""
    if isinstance(t, Mapping):
        answers = t.get("answers")
        return [str(a) for a in answers] if answers else [str(t["targets"])]
    if isinstance(t, (list, tuple)):
        return [str(a) for a in t]
    return [str(t)]


# ----------------------------------------------------------------------------- task scorers


def score_classification(targets: Sequence, predictions: Sequence[str], label_words: Sequence[str],
                         extra: Iterable[str] = ()) -> dict[str, float]:
    """Accuracy plus any of ``f1`` (positive class = label_words[1]) and ``mcc`` for label-word tasks."""
    gold = [parse_label(_target_text(t), label_words) for t in targets]
    pred = [parse_label(p, label_words) for p in predictions]
    out = {"accuracy": accuracy(gold, [p if p >= 0 else -1 for p in pred])}
    extra = tuple(extra)
    if extra:
        if len(label_words) != 2:
            raise ValueError(f"f1/mcc here are binary metrics; got {len(label_words)} labels")
        # An unparseable prediction becomes the wrong class, never a free true negative.
        flipped = [p if p >= 0 else 1 - g for g, p in zip(gold, pred)]
        if "f1" in extra:
            out["f1"] = binary_f1(gold, flipped, positive=1)
        if "mcc" in extra:
            out["mcc"] = matthews_corrcoef(gold, flipped)
    return out


def score_regression(targets: Sequence, predictions: Sequence[str], low: float = 0.0,
                     high: float = 5.0) -> dict[str, float]:
    """Pearson and Spearman (percent) of predicted numbers against gold numbers (STS-B)."""
    gold = [parse_float(_target_text(t)) for t in targets]
    gold = [g if g is not None else 0.0 for g in gold]
    mid = (low + high) / 2
    pred = []
    for g, p in zip(gold, predictions):
        v = parse_float(p)
        pred.append(v if v is not None else (high if g < mid else low))
    return {"pearson": pearson(gold, pred), "spearman": spearman(gold, pred)}


def score_squad(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD EM/F1 with max over each example's gold answers."""
    return squad_scores([_target_answers(t) for t in targets], [str(p) for p in predictions])


def score_multirc(targets: Sequence, predictions: Sequence[str], label_words: Sequence[str]) -> dict[str, float]:
    """MultiRC: F1a over all answer options and EM over questions (all options of a question right).

    Targets must be the text examples (dicts), whose ``group`` extra identifies the
    question each answer option belongs to.
    """
    groups = []
    for t in targets:
        if not isinstance(t, Mapping) or "group" not in t:
            raise ValueError("MultiRC scoring groups answers by question: pass the text examples "
                             "(dicts with a 'group' field) as targets, not bare strings.")
        groups.append(t["group"])
    gold = [parse_label(_target_text(t), label_words) for t in targets]
    pred = [parse_label(p, label_words) for p in predictions]
    flipped = [p if p >= 0 else 1 - g for g, p in zip(gold, pred)]
    per_group: dict = collections.defaultdict(list)
    for grp, g, p in zip(groups, gold, flipped):
        per_group[grp].append(g == p)
    em = 100.0 * float(np.mean([all(v) for v in per_group.values()])) if per_group else 0.0
    return {"f1a": binary_f1(gold, flipped, positive=1), "em": em}
