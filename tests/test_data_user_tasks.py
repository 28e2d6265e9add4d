"""User tasks from JSONL/TSV files, and clear errors for every kind of bad input."""

import json

import pytest

from talora_jax.data import pipeline, tasks, user_tasks
from talora_jax.data.errors import DataFormatError, DataNotFoundError, SplitNotFoundError, UnknownTaskError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def sentiment_cfg(tmp_path):
    rows = [{"text": f"review number {i} was {'good' if i % 2 else 'bad'}", "y": "positive" if i % 2 else "negative"}
            for i in range(10)]
    cfg = {"name": "my_sent", "train": _jsonl(tmp_path / "train.jsonl", rows),
           "dev": _jsonl(tmp_path / "dev.jsonl", rows[:4]), "input_field": "text", "target_field": "y",
           "metric": "accuracy_f1", "label_words": ["negative", "positive"]}
    yield cfg
    tasks.unregister("my_sent")


def test_jsonl_task_registered_and_scored(sentiment_cfg, spm_dir):
    task = user_tasks.register_from_config(sentiment_cfg)
    assert tasks.get("my_sent") is task
    train = list(task.text_examples("train"))
    assert len(train) == 10 and train[1] == {"inputs": "my_sent review number 1 was good", "targets": "positive"}
    dev = list(task.text_examples("dev"))
    assert task.score(dev, [e["targets"] for e in dev]) == {"accuracy": 100.0, "f1": 100.0}
    assert task.label_words == ["negative", "positive"]
    from talora_jax.t5 import load_tokenizer
    ts = pipeline.load_split("my_sent", "train", load_tokenizer(spm_dir), 64, 8)
    assert len(ts) == 10
    with pytest.raises(SplitNotFoundError, match="no 'test' file"):
        list(task.text_examples("test"))


def test_tsv_task_with_squad_metric(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("question\tanswer\nwho wrote it\tthe author\nwhat colour\tred\n")
    task = user_tasks.from_config({"name": "my_qa", "train": str(p), "input_field": "question",
                                   "target_field": "answer", "metric": "squad", "prefix": "qa"})
    ex = list(task.text_examples("train"))
    assert ex[0] == {"inputs": "qa who wrote it", "targets": "the author"}
    assert task.score(ex, ["author", "blue"]) == {"em": 50.0, "f1": 50.0}
    bad = tmp_path / "bad.tsv"
    bad.write_text("question\tanswer\nonly one field\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: expected 2"):
        user_tasks.read_records(str(bad))


def test_malformed_jsonl_reports_line_number(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"x": "a", "y": "b"}\n\n{"x": "c", "y": \n')
    with pytest.raises(DataFormatError, match=r"train.jsonl:3: malformed JSON"):
        user_tasks.read_records(str(p))
    p.write_text('{"x": "a", "y": "b"}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match=r":2: expected a JSON object"):
        user_tasks.read_records(str(p))


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataFormatError, match="no examples"):
        user_tasks.read_records(str(empty))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        user_tasks.read_records(str(tmp_path / "nope.jsonl"))


def test_missing_field_and_bad_label(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"text": "a", "y": "yes"}, {"text": "b"}])
    task = user_tasks.from_config({"name": "t", "train": path, "input_field": "text", "target_field": "y"})
    with pytest.raises(DataFormatError, match=r"line 2\): missing field 'y'"):
        list(task.text_examples("train"))
    task = user_tasks.from_config({"name": "t", "train": path, "input_field": "text", "target_field": "y",
                                   "label_words": ["no", "maybe"]})
    with pytest.raises(DataFormatError, match="not one of the label_words"):
        list(task.text_examples("train"))


def test_bad_configs():
    with pytest.raises(DataFormatError, match="unknown keys"):
        user_tasks.from_config({"name": "t", "train": "x", "input_field": "a", "target_field": "b", "typo": 1})
    with pytest.raises(DataFormatError, match="needs 'train'"):
        user_tasks.from_config({"name": "t", "input_field": "a", "target_field": "b"})
    with pytest.raises(DataFormatError, match="unknown metric"):
        user_tasks.from_config({"name": "t", "train": "x", "input_field": "a", "target_field": "b", "metric": "bleu"})
    with pytest.raises(DataFormatError, match="two label_words"):
        user_tasks.from_config({"name": "t", "train": "x", "input_field": "a", "target_field": "b", "metric": "mcc"})


def test_unknown_task_suggests_close_names():
    with pytest.raises(UnknownTaskError, match=r"Did you mean 'mnli'") as e:
        tasks.get("mnl")
    assert "Known tasks" in str(e.value)
    with pytest.raises(UnknownTaskError, match=r"'synth_topic'"):
        tasks.get("synth_topics")
