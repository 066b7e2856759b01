"""Does the torch re-implementation of the ``jigsaw-bilstm`` scorer match the wheel's own TensorFlow model?

Scores ~30 varied texts (toxic, neutral, over 100 words, empty, punctuation only, ...) with
``hf_sparc.metrics.jigsaw_scorer`` and with ``toxic_classifier.ToxicCommentClassifier().classify``
(the wheel's own Keras code, text by text) and writes both, with the largest absolute difference,
to docs/results/jigsaw_scorer_check.json.

TensorFlow must not go into the project's environment (it pins its own numpy); run the Keras side
in a throw-away virtual environment instead, which only needs tensorflow-cpu, h5py and numpy (the
wheel's files are loaded from this environment's install)::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu h5py numpy
    python benchmarks/jigsaw_scorer_check.py --tf-python /tmp/tfenv/bin/python

Without a Python that can import TensorFlow the script says so and exits (status 0, no file written).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from hf_sparc.data.wheels import dist_file
from hf_sparc.metrics.jigsaw_scorer import (
    JIGSAW_DIST,
    JIGSAW_LABELS,
    JIGSAW_PIP,
    installed_jigsaw_classifier,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "jigsaw_scorer_check.json"
LONG = " ".join(["the article was reverted twice because the sources were not reliable"] * 12)
TEXTS = [
    "you are a stupid idiot",
    "have a nice day",
    "",
    "   ",
    "!!! ??? ... ,,, ;;; ---",
    "I will kill you and your whole family",
    "fuck off you worthless piece of shit",
    "Thank you for your edits to the article on photosynthesis.",
    "YOU ARE A MORON!!!",
    "What an IDIOT.\tSeriously,\nwhat an idiot...",
    "Please stop vandalising the page, or you will be blocked.",
    "I disagree with the deletion; the band is notable (see the sources below).",
    "go back to your country, you filthy immigrant",
    "shut up",
    "the cat sat on the mat",
    "he said that she was an incompetent, lazy bureaucrat",
    "don't you dare revert my edit again, loser",
    "Ölçü ünïcödé tëxt ü ß 東京 ☃ emoji 😀",
    "1234567890 3.14159 42",
    "asdfqwer zxcvbnm qwertyuiop",  # words the vocabulary does not know
    "antidisestablishmentarianism floccinaucinihilipilification",  # rare: cut by num_words
    LONG,  # 132 words: the first ones are cut (truncating='pre')
    LONG + " you are a stupid idiot",
    "you are a stupid idiot " + LONG,  # the insult falls off the front
    "I hate you. I hate you. I hate you.",
    "This is a neutral, well-sourced paragraph about medieval history and the printing press.",
    "suck my dick",
    "You're welcome! Happy to help with the formatting.",
    "die in a fire",
    "Nice work on the infobox :-)",
    "gay",
    "the movie was terribly bad but the actors were great",
]

# Runs under --tf-python: the wheel's own Keras code, its files taken from this environment.
TF_SIDE = r"""
import importlib.util, json, sys
package = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "toxic_classifier", package + "/__init__.py", submodule_search_locations=[package])
module = importlib.util.module_from_spec(spec)
sys.modules["toxic_classifier"] = module
spec.loader.exec_module(module)
import keras, numpy, tensorflow
texts = json.load(sys.stdin)
classifier = module.ToxicCommentClassifier()
print(json.dumps({
    "scores": [classifier.classify(text) for text in texts],
    "ids": classifier.tokenizer.texts_to_sequences(texts),
    "versions": {"tensorflow": tensorflow.__version__, "keras": keras.__version__,
                 "numpy": numpy.__version__, "python": sys.version.split()[0]},
}))
"""


def tensorflow_scores(tf_python: str, texts: list[str]) -> dict | None:
    """The wheel's own classification of ``texts`` under ``tf_python``, or None if TF is missing."""
    probe = subprocess.run([tf_python, "-c", "import tensorflow"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    package = dist_file(JIGSAW_DIST, "toxic_classifier/__init__.py", JIGSAW_PIP, "this check").parent
    done = subprocess.run(
        [tf_python, "-c", TF_SIDE, str(package)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tf-python", default=sys.executable, help="a Python that can import tensorflow")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    reference = tensorflow_scores(args.tf_python, TEXTS)
    if reference is None:
        print(
            f"jigsaw_scorer_check: skipped: {args.tf_python} cannot import tensorflow. Make one with\n"
            "  python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu h5py numpy\n"
            "and pass --tf-python /tmp/tfenv/bin/python."
        )
        return 0
    classifier = installed_jigsaw_classifier()
    ours = classifier.probabilities(TEXTS)
    theirs = torch.tensor([[row[label] for label in JIGSAW_LABELS] for row in reference["scores"]])
    ids = classifier.tokenizer.texts_to_sequences(TEXTS)
    toxic = JIGSAW_LABELS.index("toxic")
    result = {
        "texts": [
            {"text": text, "torch_toxic": float(ours[i, toxic]), "tensorflow_toxic": float(theirs[i, toxic])}
            for i, text in enumerate(TEXTS)
        ],
        "max_abs_diff_toxic": float((ours[:, toxic] - theirs[:, toxic]).abs().max()),
        "max_abs_diff_all_labels": float((ours - theirs).abs().max()),
        "token_ids_identical": ids == reference["ids"],
        "versions": {
            **{f"tf_side_{key}": value for key, value in reference["versions"].items()},
            "torch": torch.__version__,
            "toxic-comment-classifier": metadata.version(JIGSAW_DIST),
            "python": platform.python_version(),
        },
        "command": shlex.join(["python", "benchmarks/jigsaw_scorer_check.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(
        f"max |torch - tensorflow| of P(toxic) over {len(TEXTS)} texts: {result['max_abs_diff_toxic']:.2e} "
        f"(all six labels: {result['max_abs_diff_all_labels']:.2e}); "
        f"token ids identical: {result['token_ids_identical']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
