"""The task kit (`edgetune.kit`): no task plugin imports another, and the kit's helpers,
through their public functions."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.kit import (
    LabelIds,
    TextClassifier,
    TokenizerRuntime,
    classification_metrics,
    input_texts,
    load_tokenizer,
    onnx_feeds,
    optional_text_field,
    sequence_classifier,
    single_label,
    string_list,
    text_field,
    tokenize,
    tokenizer_options,
)
from edgetune.kit.text import splits_at_spaces
from edgetune.store import Manifest
from edgetune.task import Image, Input, ModelFiles, Text, TextPair, TokenIds

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "edgetune"
TASK_MODULES = (
    "text_classification",
    "multi_label",
    "token_classification",
    "image_classification",
    "sentence_classification",
)
FORBIDDEN = tuple(f"edgetune.plugins.{name}" for name in TASK_MODULES)

# ---- (a) no task plugin depends on another ----------------------------------------------


def imported_modules(source: str, module: str) -> set[str]:
    """Every module a source imports, including `from package import name` as
    package.name (it may be a module) and relative imports resolved against `module`."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def task_imports(source: str, module: str) -> list[str]:
    """The task plugin modules a module imports, other than itself."""
    names = imported_modules(source, module)
    return sorted(
        task
        for task in FORBIDDEN
        if task != module and any(n == task or n.startswith(f"{task}.") for n in names)
    )


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_import_check_catches_every_form() -> None:
    me = "edgetune.plugins.multi_label"
    assert task_imports("from edgetune.plugins.text_classification import X\n", me)
    assert task_imports("import edgetune.plugins.token_classification as t\n", me)
    assert task_imports("from edgetune.plugins import image_classification\n", me)
    assert task_imports("from . import text_classification\n", me)
    assert task_imports("from .text_classification import TextClassification\n", me)
    assert not task_imports("from edgetune.plugins import hookimpl\n", me)
    assert not task_imports("from edgetune.kit import TextTask\n", me)
    assert not task_imports("from edgetune.plugins.multi_label import sigmoid\n", me)


def test_no_plugin_or_example_imports_a_task_plugin_module() -> None:
    sources = [*(PACKAGE / "plugins").glob("*.py"), *(PACKAGE / "kit").rglob("*.py")]
    examples = sorted((ROOT / "examples").glob("edgetune-*/src/**/*.py"))
    assert len(examples) >= 2, "the example plugins moved"
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sources
        if (found := task_imports(path.read_text(), module_name(path)))
    }
    offenders |= {
        str(path.relative_to(ROOT)): found
        for path in examples
        if (found := task_imports(path.read_text(), "example"))
    }
    assert not offenders, f"task plugins must build on edgetune.kit, not each other: {offenders}"


def test_the_core_does_not_import_the_kit() -> None:
    core = [
        path
        for path in PACKAGE.rglob("*.py")
        if not {"plugins", "kit", "v1", "kserve"} & set(path.relative_to(PACKAGE).parts)
    ]
    assert len(core) > 20
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in core
        if any(
            name == "edgetune.kit" or name.startswith("edgetune.kit.")
            for name in imported_modules(path.read_text(), module_name(path))
        )
    ]
    assert not offenders, offenders


def test_importing_the_kit_imports_no_training_library() -> None:
    probe = (
        "import sys, edgetune.kit; "
        "print(','.join(sorted({'torch', 'transformers', 'sklearn', 'optimum'} & set(sys.modules))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert not found, f"importing edgetune.kit imports {found}"


# ---- (b) row and label checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({}, "row 3: field 'text' is missing"),
        ({"text": 5}, "row 3: field 'text' must be a string"),
        ({"text": " \n"}, "row 3: field 'text' is empty"),
    ],
)
def test_text_field_names_the_row_and_field(example: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        text_field(example, "text", 3)
    assert caught.value.message == message


def test_text_fields() -> None:
    assert text_field({"text": "hi"}, "text", 1) == "hi"
    assert optional_text_field({}, "text_pair", 1) is None
    assert optional_text_field({"text_pair": ""}, "text_pair", 1) is None  # a CSV's empty cell
    assert optional_text_field({"text_pair": "b"}, "text_pair", 1) == "b"
    with pytest.raises(InvalidArgument, match="row 2: field 'text_pair' is empty"):
        optional_text_field({"text_pair": "  "}, "text_pair", 2)


def test_single_label() -> None:
    assert single_label({"label": 3}, 1) == "3"
    assert single_label({"stars": "five"}, 1, name="stars") == "five"
    with pytest.raises(InvalidArgument, match="row 4: field 'label' must be one value"):
        single_label({"label": [[[]]]}, 4)
    with pytest.raises(InvalidArgument, match="row 5: field 'label' is missing"):
        single_label({"label": " "}, 5)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "row 2: field 'tags' is missing"),
        ("O O", "row 2: field 'tags' must be a list of strings"),
        ([], "row 2: field 'tags' is empty"),
        (["O", 1], "row 2: field 'tags[1]' must be a string"),
        (["O", " "], "row 2: field 'tags[1]' is empty"),
    ],
)
def test_string_list(value: Any, message: str) -> None:
    assert string_list({"tags": ["O", "B-PER"]}, "tags", 2) == ["O", "B-PER"]
    with pytest.raises(InvalidArgument) as caught:
        string_list({"tags": value}, "tags", 2)
    assert caught.value.message == message


def test_label_ids_refuse_a_label_the_training_rows_lack() -> None:
    ids = LabelIds(["a", "b", "c"])
    assert (ids("c", 1), len(ids), ids.get("z", -1)) == (2, 3, -1)
    assert ids.multi_hot(["c", "a"], 1) == [1.0, 0.0, 1.0]
    with pytest.raises(InvalidArgument) as caught:
        ids("z", 7)
    assert caught.value.message == "row 7: label 'z' is not one of the training labels"
    with pytest.raises(InvalidArgument, match="row 2: tag 'B-X' is not one of the training"):
        LabelIds(["O"], what="tag").multi_hot(["B-X"], 2)


# ---- metrics and the baseline's texts ---------------------------------------------------------


def test_classification_metrics_match_hand_computed_values() -> None:
    # actual:    a a a b b c
    # predicted: a a b b c c
    actual = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(predicted, actual, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # precision a=2/2 b=1/2 c=1/2; recall a=2/3 b=1/2 c=1/1
    assert metrics["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert metrics["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert metrics["f1"] == pytest.approx(sum(f1) / 3)
    assert metrics["f1/c"] == pytest.approx(f1[2])
    assert metrics["confusion/a/b"] == 1 and metrics["confusion/a/a"] == 2
    assert metrics["confusion/b/c"] == 1 and metrics["confusion/c/a"] == 0
    assert sum(v for k, v in metrics.items() if k.startswith("confusion/")) == 6


def test_input_texts_join_pairs_and_skip_other_kinds() -> None:
    inputs: list[Input] = [Text("a"), TextPair("b", "c"), Image(b"png")]
    assert input_texts(inputs) == ["a", "b \n c"]


# ---- serving: the tokenizer runtime ------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "plot"]


def runtime_folder(folder: Path) -> Path:
    """A model folder holding a word-level tokenizer.json with BERT's special tokens."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def model_files(folder: Path, input_names: tuple[str, ...]) -> ModelFiles:
    manifest = Manifest(
        task="test",
        labels=["neg", "pos"],
        task_options={"max_length": 6, "pad_token": "[PAD]", "pad_token_id": 0},
    )
    return ModelFiles(folder, manifest, input_names, ("logits",))


def test_the_runtime_tokenizes_texts_and_pairs_in_one_batch(tmp_path: Path) -> None:
    names = ("input_ids", "attention_mask", "token_type_ids")
    runtime = TokenizerRuntime(model_files(runtime_folder(tmp_path), names))
    feeds = runtime.encode([Text("good film"), TextPair("bad", "plot")]).feeds
    assert set(feeds) == set(names)
    assert feeds["input_ids"].tolist() == [[2, 4, 6, 3, 0], [2, 5, 3, 7, 3]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert feeds["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    long = runtime.encode([Text("good " * 20)]).feeds["input_ids"]
    assert long.shape == (1, 6)  # cut at the manifest's max_length

    feeds, encodings = runtime.tokenize([Text("good film")])
    assert encodings[0].offsets[1] == (0, 4)


class RecordingRustTokenizer:
    """The runtime's tokenizer, recording the texts of each batch call."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.batches: list[list[Any]] = []

    def encode_batch(self, batch: list[Any]) -> Any:
        self.batches.append(list(batch))
        return self.tokenizer.encode_batch(batch)


def whole_and_recorded(folder: Path, inputs: list[Input]) -> tuple[Any, Any, list[list[Any]]]:
    """(feeds and encodings tokenizing whole texts, the same from the runtime as it is, and
    the texts the latter's tokenizer was given)."""
    names = ("input_ids", "attention_mask")
    whole = TokenizerRuntime(model_files(folder, names))
    whole.head_chars = 0
    runtime = TokenizerRuntime(model_files(folder, names))
    recording = RecordingRustTokenizer(runtime.tokenizer)
    runtime.tokenizer = cast(Any, recording)
    return whole.tokenize(inputs), runtime.tokenize(inputs), recording.batches


def test_a_long_text_is_tokenized_from_its_head_to_the_same_tokens(tmp_path: Path) -> None:
    long = "good film " * 50  # 500 characters; the model keeps 6 tokens
    inputs: list[Input] = [Text(long), Text("bad plot"), TextPair("good", "bad")]
    (feeds, encodings), (head_feeds, head_encodings), batches = whole_and_recorded(
        runtime_folder(tmp_path), inputs
    )
    assert len(batches) == 1  # the head had enough tokens: one call
    assert long.startswith(batches[0][0]) and len(batches[0][0]) <= 48  # 8 x max_length
    assert batches[0][1:] == ["bad plot", ("good", "bad")]
    assert {k: v.tolist() for k, v in head_feeds.items()} == {
        k: v.tolist() for k, v in feeds.items()
    }
    assert [e.offsets for e in head_encodings] == [e.offsets for e in encodings]


def test_a_head_with_too_few_tokens_tokenizes_the_whole_batch_again(tmp_path: Path) -> None:
    long = "x" * 40 + " good" + " film" * 20  # the head: one long unknown word and "good"
    (feeds, _), (head_feeds, _), batches = whole_and_recorded(
        runtime_folder(tmp_path), [Text(long), Text("bad")]
    )
    assert batches == [[long[:45], "bad"], [long, "bad"]]
    assert head_feeds["input_ids"].tolist() == feeds["input_ids"].tolist()
    assert feeds["input_ids"][0].tolist() == [2, 1, 4, 6, 6, 3]


def windowed(folder: Path, windows: int) -> TokenizerRuntime:
    """A runtime reading texts in up to `windows` windows of 8 tokens (6 words)."""
    options = {"max_length": 8, "windows": windows, "pad_token": "[PAD]", "pad_token_id": 0}
    manifest = Manifest(task="test", labels=["neg", "pos"], task_options=options)
    return TokenizerRuntime(ModelFiles(folder, manifest, ("input_ids", "attention_mask"), ()))


def test_a_long_text_is_read_in_windows_and_its_outputs_averaged(tmp_path: Path) -> None:
    folder = runtime_folder(tmp_path)
    words = [4, 6, 5, 7] * 5  # "good film bad plot" five times: 20 words
    inputs: list[Input] = [Text("bad"), Text("good film bad plot " * 5), TextPair("good", "bad")]
    encoded = windowed(folder, 3).encode(inputs)
    # Windows of 6 words overlapping by 2 (a quarter of 8 tokens): words 0-5, 4-9, 8-13;
    # the rest (12-17, 16-19) is not read. Pairs are never windowed.
    assert encoded.feeds["input_ids"].tolist() == [
        [2, 5, 3, 0, 0, 0, 0, 0],
        [2, *words[0:6], 3],
        [2, *words[4:10], 3],
        [2, *words[8:14], 3],
        [2, 4, 3, 5, 3, 0, 0, 0],
    ]
    assert encoded.rows is not None and encoded.rows.tolist() == [0, 1, 1, 1, 2]
    logits = np.arange(10, dtype=np.float32).reshape(5, 2)
    (merged,) = encoded.per_input([logits])
    assert merged.tolist() == [[0, 1], [4, 5], [8, 9]] and merged.dtype == np.float32
    assert len(windowed(folder, 3).decode([merged], encoded, 0)) == 3
    # Short texts only, or one window: one row per input, as before.
    assert windowed(folder, 3).encode([Text("bad"), Text("good film")]).rows is None
    one = windowed(folder, 1).encode(inputs)
    assert one.rows is None and one.feeds["input_ids"][1].tolist() == [2, *words[0:6], 3]
    # A long text tokenized from its head gives the same windows as whole.
    whole = windowed(folder, 3)
    whole.head_chars = 0
    long = [Text("good film bad plot " * 100)]
    assert len("good film bad plot " * 100) > windowed(folder, 3).head_chars
    assert (
        windowed(folder, 3).encode(long).feeds["input_ids"].tolist()
        == whole.encode(long).feeds["input_ids"].tolist()
    )


@pytest.mark.parametrize(
    ("pre_tokenizer", "splits"),
    [
        (pre_tokenizers.BertPreTokenizer(), True),
        (pre_tokenizers.WhitespaceSplit(), True),
        (pre_tokenizers.ByteLevel(), True),
        (pre_tokenizers.ByteLevel(use_regex=False), False),
        (pre_tokenizers.Metaspace(), True),
        (pre_tokenizers.Metaspace(split=False), False),
        (pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.Whitespace()]), True),
        (pre_tokenizers.Digits(), False),
        (None, False),
    ],
)
def test_only_tokenizers_that_split_at_spaces_are_cut_at_a_space(
    tmp_path: Path, pre_tokenizer: Any, splits: bool
) -> None:
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    if pre_tokenizer is not None:
        tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert splits_at_spaces(config["pre_tokenizer"]) is splits
    runtime = TokenizerRuntime(model_files(tmp_path, ("input_ids",)))
    assert runtime.head_chars == (48 if splits else 0)


def test_the_runtime_pads_token_ids_beside_texts_and_checks_them(tmp_path: Path) -> None:
    runtime = TokenizerRuntime(
        model_files(runtime_folder(tmp_path), ("input_ids", "attention_mask"))
    )
    feeds = runtime.encode([TokenIds((2, 4, 3)), Text("bad plot")]).feeds
    assert set(feeds) == {"input_ids", "attention_mask"}  # the graph takes no token types
    assert feeds["input_ids"].tolist() == [[2, 4, 3, 0], [2, 5, 7, 3]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    for item, message in [
        (TokenIds(()), "inputs[1].tokens.ids is empty"),
        (TokenIds((2, 99)), "inputs[1].tokens.ids[1] = 99 is outside the vocabulary (0..7)"),
        (TokenIds((2,) * 7), "inputs[1].tokens.ids has 7 tokens; this model takes at most 6"),
        (TokenIds((2, 3), (1,)), "inputs[1].tokens.attention_mask has 1 values; ids has 2"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            runtime.encode([Text("good"), item])
        assert caught.value.message == message


def test_the_runtime_decodes_a_single_label_softmax(tmp_path: Path) -> None:
    runtime = TokenizerRuntime(model_files(runtime_folder(tmp_path), ("input_ids",)))
    encoded = runtime.encode([Text("good")])
    (result,) = runtime.decode([np.array([[0.0, 2.0]])], encoded, top_k=0)
    assert [(s.label, s.selected) for s in result.labels] == [("pos", True), ("neg", False)]
    assert sum(s.score for s in result.labels) == pytest.approx(1.0)


def test_a_model_without_a_tokenizer_fails_to_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot read tokenizer\.json"):
        TokenizerRuntime(model_files(tmp_path, ("input_ids",)))


def test_onnx_feeds_give_the_graph_only_what_it_takes() -> None:
    ids = np.array([[0, 0, 5, 6], [5, 6, 7, 8]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])  # the first row padded on the left
    types = np.zeros_like(ids)
    assert set(onnx_feeds(ids, mask, types, {"input_ids", "attention_mask"})) == {
        "input_ids",
        "attention_mask",
    }
    feeds = onnx_feeds(ids, mask, types, {"input_ids", "position_ids", "token_type_ids"})
    assert feeds["position_ids"].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert feeds["token_type_ids"] is types


# ---- training helpers ------------------------------------------------------------------------


class RecordingTokenizer:
    """Stands in for a transformers tokenizer: records what it is called with."""

    pad_token, pad_token_id, model_max_length = "<pad>", 7, 40

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.called = (args, kwargs)
        return {"input_ids": [[1, 2]] * len(args[0])}

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:
        return ()


def test_tokenize_passes_pairs_only_when_every_input_has_one() -> None:
    tokenizer = RecordingTokenizer()
    tokenize(tokenizer, [Text("a"), Text("b")], truncation=True)
    assert tokenizer.called == ((["a", "b"], None), {"truncation": True})
    tokenize(tokenizer, [TextPair("a", "b")])
    assert tokenizer.called == ((["a"], ["b"]), {})
    with pytest.raises(InvalidArgument, match="field 'text_pair' must be on every row or on none"):
        tokenize(tokenizer, [TextPair("a", "b"), Text("c")])


def test_tokenizer_options_cut_at_the_shortest_limit() -> None:
    model = SimpleNamespace(config=SimpleNamespace(id2label={}, max_position_embeddings=64))
    tokenizer = RecordingTokenizer()
    assert tokenizer_options(model, tokenizer, None) == {  # type: ignore[arg-type]
        "max_length": 40,
        "pad_token": "<pad>",
        "pad_token_id": 7,
    }
    assert tokenizer_options(model, tokenizer, 16)["max_length"] == 16  # type: ignore[arg-type]


class Reviews(TextClassifier):
    """A text classifier made from the kit with its own row schema."""

    name = "reviews"
    description = "test"
    input_kinds = (Text,)

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        text_field(example, "review", row)
        return [single_label(example, row, name="stars")]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        return Text(str(example["review"]))


def test_a_text_classifier_is_its_row_schema() -> None:
    task = Reviews()
    assert task.warmup_inputs() == [Text("warm up")]  # only the kinds it takes
    assert task.targets([{"review": "good", "stars": 5}], ["1", "5"]) == [1]
    with pytest.raises(InvalidArgument, match="row 2: label '3' is not one of the training"):
        task.targets([{"review": "good", "stars": 5}, {"review": "ok", "stars": 3}], ["5"])
    features = task.build_features([{"review": "good", "stars": 1}], RecordingTokenizer(), ["1"], 8)
    assert features == [{"input_ids": [1, 2], "labels": 0}]
    metrics = task.compute_metrics(np.array([[0.1, 2.0], [3.0, 0.0]]), np.array([1, 1]), ["1", "5"])
    assert metrics["accuracy"] == 0.5


def test_decoders_get_a_pad_token_for_tokenizer_and_model(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    word_level = Tokenizer(models.WordLevel({"<eos>": 0, "hi": 1, "<unk>": 2}, unk_token="<unk>"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, eos_token="<eos>")
    fast.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).pad_token == "<eos>"

    config = transformers.GPT2Config(
        vocab_size=8, n_positions=16, n_embd=8, n_layer=1, n_head=2, eos_token_id=0
    )
    transformers.GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    model = sequence_classifier(tmp_path, ["score"], "regression")
    config = model.config
    assert (config.pad_token_id, config.problem_type, config.id2label) == (
        0,
        "regression",
        {0: "score"},
    )  # type: ignore[attr-defined]
