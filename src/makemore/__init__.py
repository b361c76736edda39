"""makemore: character-level language models of lists of words, with the MLP of Bengio et al.
(2003, makemore part 2) at its heart.

In a notebook:

    import makemore as mm
    corpus = mm.load_corpus("names")                       # or a path to any file of words
    result = mm.train(corpus, preset="lecture", steps=20_000)   # out="runs/x" keeps a run directory
    result = mm.train(corpus, budget=60)                   # = makemore train --budget 60: recipe + mixture
    predictor = mm.model_predictor(result.model)
    mm.sample(predictor, corpus.vocab, n=10, seed=1)
    mm.score(predictor, corpus.vocab, ["emma", "xqzt"])
    run = mm.load_run("runs/x")                            # a saved model, ready to use

Other models (models/: bigram, rnn, gru, bow, transformer, wavenet) by name:

    result = mm.train(corpus, model="gru", hidden=128)
    model_cfg, train_cfg = mm.make_configs(model="gru", vocab_size=corpus.vocab.size)   # or explicit configs
    result = mm.train(corpus, model_cfg, train_cfg)

Several runs at once are the members of one training loop, e.g. a seed ensemble:

    ens = mm.train_ensemble(corpus, model_cfg, train_cfg, seeds=5, out="runs/ens")
    predictor = mm.ensemble_predictor([r.model for r in ens.results])   # mean of probabilities
    ens = mm.load_ensemble("runs/ens")                     # later: ens.models, ens.vocab, ens.splits
    results = mm.train_population(corpus, model_cfg, [train_cfg_a, train_cfg_b])  # any lrs, seeds
"""

import os

from .errors import quiet_interrupt_at_start

quiet_interrupt_at_start()  # first: Ctrl-C during the imports below is one line for the command

# OpenMP threads that wait for work by spinning (GNU OpenMP's default) collapse when another
# process wants a core. Threads that sleep at once cost small autograd models some speed on a
# free machine and save them from collapse on a shared one, which is the better default for a
# tool people run beside other work (`make bench`, item `openmp`: docs/speed.md). Set before
# torch starts its OpenMP runtime; values the user chose are kept.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from .config import PRESETS, TrainConfig, make_configs  # noqa: E402 (after the OpenMP setting)
from .data import Corpus, Examples, Vocab, build_examples, load_corpus, split_words  # noqa: E402
from .errors import UserError  # noqa: E402
from .models import Model, ModelConfig, build, count_params  # noqa: E402
from .models.mlp import MLP, MLPConfig  # noqa: E402
from .fit import resume, train  # noqa: E402
from .loop import TrainResult  # noqa: E402
from .mixture import run_predictor  # noqa: E402
from .predict import ensemble_predictor, make_predictor, model_predictor, split_nll, words_nll  # noqa: E402
from .runs import Ensemble, Run, load_ensemble, load_run  # noqa: E402
from .sampling import sample, sample_tagged, score, tag_words  # noqa: E402
from .ensembles import EnsembleResult, train_ensemble  # noqa: E402
from .training import train_members, train_population  # noqa: E402

__all__ = [
    "PRESETS", "ModelConfig", "TrainConfig", "make_configs", "Corpus", "Examples", "Vocab", "build_examples",
    "load_corpus", "split_words", "UserError", "Model", "MLP", "MLPConfig", "build", "count_params", "Run",
    "load_run", "make_predictor", "model_predictor", "run_predictor", "split_nll", "words_nll", "sample",
    "sample_tagged", "score", "tag_words", "TrainResult", "resume", "train", "train_members", "EnsembleResult",
    "train_ensemble", "train_population", "Ensemble", "load_ensemble", "ensemble_predictor",
]
