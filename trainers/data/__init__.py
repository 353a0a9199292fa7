"""A run's data: where it comes from (`sources`), the tokenizer and processor (`processors`), encoded
splits (`encoding`) and batches (`collator`). The collator takes encoded rows or raw dataset rows (a
`PIL` image, a caption, audio bytes) and emits exactly the model's `forward` argument names, so
`transformers.Trainer` can use it unchanged."""

from .collator import EpochShuffleSampler, XModalDataCollator
from .encoding import EncodedDataset, encode_rows, encode_split, target_labels
from .errors import DataError
from .processors import (
    configure_tokens,
    forward_argument_names,
    make_processor,
    make_tokenizer,
    whisper_feature_extractor,
)
from .sources import UNSEEN_VOICE_SUFFIX, load_raw_dataset, select_split

__all__ = ["DataError", "EncodedDataset", "EpochShuffleSampler", "UNSEEN_VOICE_SUFFIX", "XModalDataCollator",
           "configure_tokens", "encode_rows", "encode_split", "forward_argument_names", "load_raw_dataset",
           "make_processor", "make_tokenizer", "select_split", "target_labels", "whisper_feature_extractor"]
