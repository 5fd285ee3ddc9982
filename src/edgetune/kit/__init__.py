"""The task kit: what a task plugin builds a `edgetune.task.Task` from.

Every built-in task is made of these parts, and so can a third party's: import them from
`edgetune.kit` (the submodules are an implementation detail).

* rows (`rows`): field checks that name the row and the field (`text_field`,
  `optional_text_field`, `single_label`, `string_list`) and `LabelIds`, the label -> id
  map that refuses a label the training rows did not have;
* text (`text`): `TokenizerRuntime` (serving with the model's tokenizer.json: batch
  tokenization, token-id inputs, the feeds the ONNX graph takes), `load_tokenizer` and
  `sequence_classifier` (training, with the pad-token fallbacks decoders need),
  `tokenizer_options`, and the bases `TextTask` and `TextClassifier`;
* metrics (`metrics`): accuracy, precision, recall, F1 and the confusion matrix in numpy;
* baselines (`baselines`): the TF-IDF + logistic-regression baseline of text tasks.

Nothing here imports torch, transformers or scikit-learn when it is imported: they are
imported inside the training-side functions, so a serving-only install imports the kit.
"""

from edgetune.kit.baselines import TFIDF_DESCRIPTION, input_texts, tfidf_logistic_regression
from edgetune.kit.metrics import classification_metrics, confusion_matrix
from edgetune.kit.rows import LabelIds, optional_text_field, single_label, string_list, text_field
from edgetune.kit.text import (
    DEFAULT_MAX_LENGTH,
    TextClassifier,
    TextTask,
    TextTokenizer,
    TokenizerRuntime,
    as_tokenizer,
    load_tokenizer,
    onnx_feeds,
    sequence_classifier,
    tokenize,
    tokenizer_options,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "TFIDF_DESCRIPTION",
    "LabelIds",
    "TextClassifier",
    "TextTask",
    "TextTokenizer",
    "TokenizerRuntime",
    "as_tokenizer",
    "classification_metrics",
    "confusion_matrix",
    "input_texts",
    "load_tokenizer",
    "onnx_feeds",
    "optional_text_field",
    "sequence_classifier",
    "single_label",
    "string_list",
    "text_field",
    "tfidf_logistic_regression",
    "tokenize",
    "tokenizer_options",
]
