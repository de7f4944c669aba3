"""Reading data files and packaged datasets into labelled texts, validated and split."""

from tunesmith.data.loading import EXTENSIONS, Table, read_table
from tunesmith.data.packaged import PACKAGED, PackagedDataset, is_packaged, list_datasets, packaged_path, register_dataset
from tunesmith.data.texts import (
    LABEL_COLUMN_NAMES,
    TEXT_COLUMN_NAMES,
    LabelledTexts,
    PreparedData,
    load_texts,
    prepare_classification,
)

__all__ = [
    "EXTENSIONS",
    "LABEL_COLUMN_NAMES",
    "PACKAGED",
    "TEXT_COLUMN_NAMES",
    "LabelledTexts",
    "PackagedDataset",
    "PreparedData",
    "Table",
    "is_packaged",
    "list_datasets",
    "load_texts",
    "packaged_path",
    "prepare_classification",
    "read_table",
    "register_dataset",
]
