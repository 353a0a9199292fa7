"""A run's data: where it comes from (`sources`), each row made ready or counted out (`rows`), the tokenizer
and processor (`processors`), encoded splits (`encoding`), batches (`collator`), and the built-in scenes
written in the layouts `datasets` reads (`export`). The collator takes encoded rows or raw dataset rows (a
`PIL` image, a caption, audio bytes) and emits exactly the model's `forward` argument names, so
`transformers.Trainer` can use it unchanged."""

from .collator import EpochShuffleSampler, XModalDataCollator, compile_length_buckets, row_lengths
from .encoding import EncodedDataset, add_caption_hashes, encode_rows, encode_split, label_roles, target_labels
from .errors import DataError
from .processors import (
    configure_tokens,
    forward_argument_names,
    make_processor,
    make_tokenizer,
    whisper_feature_extractor,
)
from .rows import SKIP_REASONS, RowError
from .sources import (
    base_dir,
    check_columns,
    check_split_names,
    encoded_cache_dir,
    load_raw_dataset,
    select_split,
    validation_split_name,
)

__all__ = ["DataError", "EncodedDataset", "EpochShuffleSampler", "add_caption_hashes", "compile_length_buckets",
           "row_lengths", "RowError",
           "SKIP_REASONS",
           "XModalDataCollator", "base_dir", "check_columns", "check_split_names", "configure_tokens", "encode_rows",
           "encode_split", "encoded_cache_dir", "forward_argument_names", "label_roles", "load_raw_dataset",
           "make_processor", "make_tokenizer", "select_split", "target_labels", "validation_split_name",
           "whisper_feature_extractor"]
