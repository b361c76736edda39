"""makemore: a character-level MLP language model (Bengio et al. 2003, makemore part 2).

In a notebook:

    import makemore as mm
    corpus = mm.load_corpus("names")                       # or a path to any file of words
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=corpus.vocab.size, steps=20_000)
    result = mm.train(corpus, model_cfg, train_cfg)        # out="runs/x" keeps a run directory
    predictor = mm.mlp_predictor(result.model)
    mm.sample(predictor, corpus.vocab, n=10, seed=1)
    mm.score(predictor, corpus.vocab, ["emma", "xqzt"])
    run = mm.load_run("runs/x")                            # a saved model, ready to use

Several runs of one shape at once (population.py), e.g. a seed ensemble:

    ens = mm.train_ensemble(corpus, model_cfg, train_cfg, seeds=5, out="runs/ens")
    predictor = mm.ensemble_predictor([r.model for r in ens.results])   # mean of probabilities
    ens = mm.load_ensemble("runs/ens")                     # later: ens.models, ens.vocab, ens.splits
    results = mm.train_population(corpus, model_cfg, [train_cfg_a, train_cfg_b])  # any lrs, seeds
"""

from .config import PRESETS, ModelConfig, TrainConfig, make_configs
from .data import Corpus, Vocab, build_examples, load_corpus, split_words
from .errors import UserError
from .model import MLP, count_params, mean_nll
from .population import EnsembleResult, train_ensemble, train_population
from .runs import Ensemble, Run, load_ensemble, load_run
from .sample import (ensemble_predictor, make_predictor, mlp_predictor, predictor_nll, sample, sample_tagged,
                     score, tag_words)
from .train import TrainResult, resume, train

__all__ = [
    "PRESETS", "ModelConfig", "TrainConfig", "make_configs", "Corpus", "Vocab", "build_examples",
    "load_corpus", "split_words", "UserError", "MLP", "count_params", "mean_nll", "Run", "load_run",
    "make_predictor", "mlp_predictor", "sample", "sample_tagged", "score", "tag_words", "TrainResult", "resume", "train",
    "EnsembleResult", "train_ensemble", "train_population", "Ensemble", "load_ensemble", "ensemble_predictor",
    "predictor_nll",
]
