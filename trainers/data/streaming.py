"""Streaming (`data.streaming: true`): rows read, decoded and encoded on the fly in DataLoader workers, so
memory stays flat in the dataset's size and the first step does not wait for the whole split.

The row order depends only on (seed, epoch): the stream is shuffled with a buffer (`data.shuffle_buffer`),
split across processes with `datasets.distributed.split_dataset_by_node`, and dealt out to the workers
by position (row j of a process's stream to worker j mod W), which the DataLoader takes back in turn, so
its output is exactly the stream. A resumed run skips the rows it had consumed (read, not decoded) and
deals the rest from there: it sees exactly the batches an uninterrupted run would, with any number of
workers.
"""

import itertools

import torch

from .encoding import encode_prepared, label_roles
from .errors import DataError
from .rows import RowError, prepare_row


def stream_split(data_config, split_name):
    """The split as a `datasets.IterableDataset`: a streaming load for files and Hub ids, and an iterable view
    of an in-memory or saved dataset (built-in ones included)."""
    from datasets import IterableDataset

    from .sources import load_raw_dataset, select_split

    raw = load_raw_dataset(data_config, streaming=True)
    split = select_split(raw, split_name, data_config=data_config)
    if not isinstance(split, IterableDataset):
        split = split.to_iterable_dataset(num_shards=max(1, min(64, split.num_rows // 256)))
    return split


class StreamingRows(torch.utils.data.IterableDataset):
    """Encoded rows of a stream for one process; iterate it through `streaming_loader`."""

    def __init__(self, stream, processor, data_config, task, modalities, base_dir=None, seed=0, rank=0,
                 world_size=1):
        self.stream, self.processor, self.data_config = stream, processor, data_config
        self.task, self.modalities, self.base_dir = task, list(modalities), base_dir
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0
        self.skipped = {}

    def set_position(self, epoch, start):
        """Iterate epoch `epoch` from row `start` of this process's stream."""
        self.epoch, self.start = epoch, start

    def ordered_rows(self):
        """This process's raw rows of the current epoch, in order, from `start` on."""
        from datasets.distributed import split_dataset_by_node

        stream = self.stream.shuffle(seed=self.seed, buffer_size=self.data_config.shuffle_buffer)
        stream.set_epoch(self.epoch)
        if self.world_size > 1:
            stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size)
        # `.iter` and not `iter()`: inside a DataLoader worker `iter()` would hand this worker only some shards
        # (datasets' own worker split); every worker reads the whole stream here and keeps its positions.
        rows = ({key: values[i] for key, values in batch.items()} for batch in stream.iter(batch_size=64)
                for i in range(len(next(iter(batch.values())))))
        return itertools.islice(rows, self.start, None)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        index, count = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        columns, roles = self.data_config.resolved_columns(), label_roles(self.task, self.data_config)
        for position, row in enumerate(self.ordered_rows()):
            if position % count != index:
                continue
            try:
                prepared = prepare_row(row, columns, self.modalities, roles, self.base_dir)
            except RowError as error:
                if self.data_config.on_error == "raise":
                    raise DataError(f"Row {self.start + position} of the stream (epoch {self.epoch}) cannot be "
                                    f"used: {error}.") from None
                yield {"skipped": error.reason}  # counted by the loader, in the main process
                continue
            encoded = encode_prepared([prepared], self.processor, self.data_config, self.task, self.modalities)
            yield {key: value[0] for key, value in encoded.items()}


def pad_batch(rows, pad_token_id):
    """Encoded rows of different lengths -> one batch padded to its longest (labels with -100)."""
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if values[0].dim() == 0 or key == "pixel_values":
            batch[key] = torch.stack(values)
            continue
        longest = max(v.shape[-1] for v in values)
        fill = {"labels": -100, "input_ids": pad_token_id}.get(key, 0)
        batch[key] = torch.stack([torch.nn.functional.pad(v, (0, longest - v.shape[-1]), value=fill) for v in values])
    return batch


def streaming_batches(rows, batch_size, num_workers, pad_token_id, skipped):
    """(batch of `batch_size` rows, rows read so far) from `rows` (a `StreamingRows`), read by `num_workers`
    DataLoader workers that hand back single rows in turn; rows that could not be used are counted in
    `skipped` (a dict) and in the rows read, which is where a resumed run starts again."""
    loader = torch.utils.data.DataLoader(rows, batch_size=None, num_workers=num_workers,
                                         persistent_workers=False)
    batch, read = [], 0
    for row in loader:
        read += 1
        if "skipped" in row:
            skipped[row["skipped"]] = skipped.get(row["skipped"], 0) + 1
            continue
        batch.append(row)
        if len(batch) == batch_size:
            yield pad_batch(batch, pad_token_id), read
            batch = []


STREAM_VALIDATION_ROWS = 1000  # rows of a stream's validation split validated on when data.max_eval_samples is unset


def stream_head(stream, rows):
    """The first `rows` rows of a stream as an in-memory `Dataset` with the stream's features (when known)."""
    from datasets import Dataset

    head = list(itertools.islice(iter(stream), rows))
    if not head:
        raise DataError("The validation split of the stream has no rows.")
    return Dataset.from_list(head, features=stream.features)


def text_sample(stream, data, rows=2_000):
    """The first `rows` texts of a stream, as a one-column dataset to fit the tokenizer on. Only the text column
    is kept (`select_columns`, so images and audio are not decoded; for a dotted name, its top-level struct),
    and a fixed number of rows is read, so the time to the first step does not grow with the dataset."""
    from datasets import Dataset

    column = data.column("text")
    top = column if stream.column_names is not None and column in stream.column_names else column.split(".")[0]
    if stream.column_names is None or top in stream.column_names:
        stream = stream.select_columns([top])

    def text(row):
        value = row.get(column)
        if value is None and top != column:  # reach into the struct: json.caption -> row["json"]["caption"]
            value = row.get(top)
            for key in column.split(".")[1:]:
                value = value.get(key) if isinstance(value, dict) else None
        return value

    texts = (text(row) for row in itertools.islice(iter(stream), rows))
    return Dataset.from_dict({column: [value for value in texts if value is not None]})


def stream_batches(rows, progress, training, accelerator, collator):
    """One pass of a stream from where `progress` says for this process, as batches on the device; at its end
    the next pass starts. The rows read (the skipped ones too) are counted in `progress.stream_position`, so a
    resumed run starts there."""
    rank, positions = accelerator.process_index, progress.stream_position
    positions += [[0, 0]] * (accelerator.num_processes - len(positions))
    epoch, start = positions[rank]
    rows.set_position(epoch, start)
    given = 0
    per_process = training.batch_size // accelerator.num_processes
    for batch, read in streaming_batches(rows, per_process, rows.data_config.num_workers,
                                         rows.processor.tokenizer.pad_token_id or 0, progress.stream_skipped):
        positions[rank] = [epoch, start + read]
        given += 1
        yield {key: value.to(accelerator.device) if torch.is_tensor(value) else value
               for key, value in collator.for_model(batch).items()}
    if not given and start == 0:
        raise DataError("The stream gave no batch in a whole pass: it has fewer rows than training.batch_size, "
                        f"or none could be used (skipped: {progress.stream_skipped}).")
    positions[rank] = [epoch + 1, 0]


def share_stream_position(progress, accelerator):
    """Every process's [pass, rows read] (they differ when rows are skipped), for the main process to save."""
    mine = torch.tensor([progress.stream_position[accelerator.process_index]], device=accelerator.device)
    return accelerator.gather(mine).tolist()
