"""The adaptive softmax (models/softmax.py; Goodman 2001, Grave et al. 2017) and the MLP's
--softmax setting: a normalised distribution, the full softmax where the head holds every
character, a loss that is the distribution's cross-entropy, the frequency order kept with the
weights, and a model that learns with it."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from makemore import cli, models
from makemore.cli import common as cli_common
from makemore.config import configs_from_dict, configs_to_dict, make_configs, model_from_dict
from makemore.data import load_corpus
from makemore.engines import AutogradEngine, make_engine
from makemore.errors import UserError
from makemore.fused import unsupported_reason
from makemore.models import softmax
from makemore.models.base import dense_targets, trim_padding
from makemore.models.mlp import MLP, MLPConfig, param_shapes
from makemore.predict import model_predictor, split_nll
from makemore.runs import load_run
from makemore.sampling import sample
from makemore.fit import train


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread


# Scripts of a small many-script list: the first most often, the last (ideographs) rarely, so
# that the frequency order puts Latin in the head and the ideographs in the last cluster.
SCRIPTS = [
    ("bcdfghjklmnprstvz", "aeiou", 60),
    ("бвгджзклмнпрстфхц", "аеиоуыэюя", 15),
    ("βγδζθκλμνξπρστφχψ", "αεηιουω", 10),
    ("".join(chr(0x0915 + i) for i in range(30)), "".join(chr(0x093E + i) for i in range(8)), 8),
    ("".join(chr(0x4E00 + 7 * i) for i in range(120)), "", 7),
]


def many_script_words(n: int, seed: int = 0) -> list[str]:
    """Name-like words in five scripts: consonant-vowel syllables (structure a model can learn),
    ideographs two or three at a time; ~230 distinct characters."""
    rng = random.Random(seed)
    weights = [w for _, _, w in SCRIPTS]
    words = []
    for _ in range(n):
        consonants, vowels, _ = rng.choices(SCRIPTS, weights)[0]
        if not vowels:
            words.append("".join(rng.choice(consonants) for _ in range(rng.randint(2, 3))))
        else:
            words.append("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))))
    return words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "scripts.txt"
    path.write_text("\n".join(many_script_words(4000)) + "\n", encoding="utf-8")
    return load_corpus(path)


def adaptive_mlp(vocab_size: int, head: int = 4, dtype=torch.float64, seed: int = 0, **overrides) -> MLP:
    cfg, _ = make_configs("lecture", vocab_size=vocab_size, block_size=3, emb_dim=4, hidden=6, softmax="adaptive",
                          softmax_head=head, init="scaled", **overrides)
    model = MLP(cfg, seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # weights far from their small initial scale: a distribution far from uniform
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    model.fit_output_order(torch.randint(0, 1000, (vocab_size,), generator=g).numpy())
    return model


def test_layout_cutoffs_cover_the_vocabulary_and_depend_on_the_config_alone():
    layout = softmax.Layout.of(64, 3653, 64)
    assert layout.cutoffs == (64, 256, 1024, 3653) and layout.head == 64
    assert layout.tail_dims == (16, 16, 16)  # 64 // 4 and the floor MIN_TAIL_DIM
    assert softmax.Layout.of(512, 3653, 64).tail_dims == (128, 32, 16)
    assert softmax.Layout.of(64, 300, 64).cutoffs == (64, 300)  # a small remainder joins the last cluster
    assert softmax.Layout.of(64, 27, 64).tails == []  # the head holds every character: no cluster
    for V in (2, 5, 65, 256, 257, 1000, 5000):
        cutoffs = softmax.Layout.of(32, V, 16).cutoffs
        assert cutoffs[-1] == V and list(cutoffs) == sorted(set(cutoffs))
    cfg, _ = make_configs("default", vocab_size=3653, softmax="adaptive")
    shapes = param_shapes(cfg)
    assert {n: tuple(p.shape) for n, p in MLP(cfg, seed=1).named_parameters()} == shapes == param_shapes(replace(cfg))
    assert shapes["W_head"] == (768, 64 + 3) and shapes["W_tail3"] == (16, 3653 - 1024)


@pytest.mark.parametrize("direct", [False, True])
def test_log_probs_sum_to_one_over_the_vocabulary(direct):
    model = adaptive_mlp(40, head=2, direct=direct, layers=2).eval()
    assert model.layout.cutoffs == (2, 8, 40)  # a head and two clusters
    X = torch.randint(0, 40, (50, 3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_probs, _ = model(X)
        by_table = model.logits_fn()(X)
    assert log_probs.dtype == torch.float64 and log_probs.shape == (50, 40)
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(50, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(by_table, log_probs, atol=1e-12)
    # a normalised distribution: predict.py's log_softmax of the "logits" leaves them as they are
    assert torch.allclose(F.log_softmax(log_probs, dim=-1), log_probs, atol=1e-12)
    assert log_probs.std() > 1  # far from uniform: the test tests something


def test_module_log_probs_sum_to_one_and_its_loss_is_their_cross_entropy():
    layer = softmax.AdaptiveSoftmax(8, 100, 10, g=torch.Generator().manual_seed(0), scaled=False).double()
    layer.fit_output_order(np.arange(100))  # rank = 99 - id: the order matters
    h = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lp = layer.log_probs(h)
    assert lp.shape == (3, 5, 100)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 5, dtype=torch.float64), atol=1e-12)
    y = torch.randint(0, 100, (3, 5), generator=torch.Generator().manual_seed(3))
    y[0, :2] = -1  # ignored, as a sequence model's padding
    keep = y != -1
    expected = -lp[keep].gather(1, y[keep][:, None]).mean()
    assert torch.allclose(layer.nll(h, y, ignore_index=-1), expected, atol=1e-12)


def test_equals_a_full_softmax_when_every_character_is_in_the_head():
    V = 30
    full_cfg, _ = make_configs("lecture", vocab_size=V, hidden=12, emb_dim=4, layers=2, direct=True,
                               softmax="full", init="scaled")
    adaptive_cfg = replace(full_cfg, softmax="adaptive", softmax_head=V)
    full, adaptive = MLP(full_cfg, seed=0).double(), MLP(adaptive_cfg, seed=0).double()
    assert adaptive.layout.tails == []
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 100, (V,), generator=g).numpy()
    adaptive.fit_output_order(counts)
    by_rank = torch.argsort(adaptive.output_order)  # the id at each rank
    assert not torch.equal(by_rank, torch.arange(V))
    with torch.no_grad():
        for name, p in full.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        for name in ("C", "W1", "b1", "W2", "b2"):
            getattr(adaptive, name).copy_(getattr(full, name))
        # the same function: the head's column r is the full layer's column of the rank-r character
        adaptive.W_head.copy_(full.W_out[:, by_rank])
        adaptive.b_head.copy_(full.b_out[by_rank])
        adaptive.W_direct.copy_(full.W_direct[:, by_rank])
    X = torch.randint(0, V, (64, 3), generator=g)
    Y = torch.randint(0, V, (64,), generator=g)
    full.eval(), adaptive.eval()
    with torch.no_grad():
        expected = F.log_softmax(full(X)[0], dim=-1)
        assert torch.allclose(adaptive(X)[0], expected, atol=1e-12)
        assert torch.allclose(adaptive.logits_fn()(X), expected, atol=1e-12)
    full.train(), adaptive.train()
    assert torch.allclose(adaptive(X, Y)[1], full(X, Y)[1], atol=1e-12)


@pytest.mark.parametrize("direct", [False, True])
def test_training_loss_is_the_cross_entropy_of_the_distribution_and_its_gradient(direct):
    """The training loss reads the head and the targets' clusters only; it must be the mean
    -log p(target) of the whole distribution, with the same gradient."""
    model = adaptive_mlp(40, head=2, direct=direct).train()
    g = torch.Generator().manual_seed(4)
    X = torch.randint(0, 40, (200, 3), generator=g)
    Y = torch.randint(0, 40, (200,), generator=g)
    logits, loss = model(X, Y)
    assert logits is None  # the full distribution is what the training loss avoids
    grads = torch.autograd.grad(loss, list(model.parameters()))
    model.needs_logits = True  # a teacher's term asks for them
    log_probs, full_loss = model(X, Y)
    expected = -log_probs.gather(1, Y[:, None]).mean()
    assert torch.allclose(loss, expected, atol=1e-12) and torch.allclose(full_loss, expected, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        assert torch.allclose(a, b, atol=1e-10)
    ranks = model.output_order[Y]
    assert (ranks >= 8).any() and ((ranks >= 2) & (ranks < 8)).any()  # both clusters are exercised


@pytest.mark.parametrize("direct", [False, True])
def test_scoring_reads_the_targets_clusters_only_and_agrees_with_the_distribution(direct, corpus):
    V = corpus.vocab.size
    cfg, _ = make_configs("lecture", vocab_size=V, block_size=3, emb_dim=4, hidden=6, softmax="adaptive",
                          softmax_head=4, direct=direct, layers=2)
    model = MLP(cfg, seed=0)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model.observe_training_data(corpus.encoded("train"))
    predictor = model_predictor(model)
    dev = corpus.encoded("dev")
    X, Y = dev.tensors(cfg.block_size)
    with torch.no_grad():
        expected = predictor(X).gather(1, Y[:, None]).squeeze(1)
    assert torch.allclose(predictor.target_log_probs(X, Y), expected, atol=1e-5)
    assert split_nll(predictor, dev) == pytest.approx(-expected.double().mean().item(), rel=1e-6)
    assert (model.output_order[Y] >= 16).any()  # targets in the last clusters too


def test_gradients_match_finite_differences():
    model = adaptive_mlp(40, head=2, direct=True)
    g = torch.Generator().manual_seed(5)
    X, Y = torch.randint(0, 40, (12, 3), generator=g), torch.randint(0, 40, (12,), generator=g)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss_of(*tensors):
        state = {**dict(zip(names, tensors)), "output_order": model.output_order}
        return torch.func.functional_call(model, state, (X, Y))[1]

    assert torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_auto_picks_full_on_27_characters_and_adaptive_on_thousands():
    lecture, _ = make_configs("lecture", vocab_size=27)
    assert lecture.softmax == "full" and not lecture.adaptive  # auto, decided: what the run records
    assert MLPConfig(vocab_size=27).softmax == "auto" and not MLPConfig(vocab_size=27).adaptive
    assert "W_out" in param_shapes(lecture) and MLP(lecture).num_params() == 11897  # the lecture's model, unchanged
    big, _ = make_configs("default", vocab_size=3653)
    assert big.softmax == "adaptive" and big.adaptive
    assert make_configs("default", vocab_size=softmax.ADAPTIVE_FROM - 1)[0].softmax == "full"
    assert make_configs("default", vocab_size=softmax.ADAPTIVE_FROM)[0].softmax == "adaptive"
    assert make_configs("default", vocab_size=3653, softmax="full")[0].softmax == "full"
    with pytest.raises(UserError, match="softmax must be one of"):
        make_configs("default", vocab_size=27, softmax="hierarchical")


def test_config_round_trip_and_configs_from_before_the_setting():
    model_cfg, train_cfg = make_configs("default", vocab_size=500, softmax="adaptive", softmax_head=32)
    assert configs_from_dict(configs_to_dict(model_cfg, train_cfg)) == (model_cfg, train_cfg)
    old = configs_to_dict(model_cfg, train_cfg)["model"]
    del old["softmax"], old["softmax_head"]
    assert model_from_dict(old).softmax == "full"  # a run saved before --softmax had a full softmax
    args = cli.build_parser().parse_args(["train", "--softmax", "adaptive", "--softmax-head", "8"])
    cfg, _ = cli_common.configs_from_args(args, vocab_size=100)
    assert (cfg.softmax, cfg.softmax_head) == ("adaptive", 8)


def test_fused_engine_refuses_it_and_auto_falls_back_to_autograd():
    model_cfg, train_cfg = make_configs("lecture", vocab_size=300, softmax="adaptive", engine="auto")
    assert "adaptive" in unsupported_reason(model_cfg, train_cfg)
    assert unsupported_reason(replace(model_cfg, softmax="full"), train_cfg) is None
    assert make_engine([MLP(model_cfg)], [train_cfg]).name == "autograd"
    with pytest.raises(UserError, match="adaptive"):
        make_engine([MLP(model_cfg)], [replace(train_cfg, engine="fused")])


def test_a_teacher_gets_the_whole_distribution():
    model_cfg, train_cfg = make_configs("lecture", vocab_size=50, softmax="adaptive", softmax_head=4, teacher=0.5,
                                        engine="autograd")
    model = MLP(model_cfg)
    engine = AutogradEngine([model], [train_cfg])
    assert model.needs_logits
    g = np.random.default_rng(0)
    idx, y = g.integers(0, 50, (1, 8, 3)), g.integers(0, 50, (1, 8))
    teacher = g.dirichlet(np.ones(50), (1, 8)).astype(np.float32)
    losses = engine.step(idx, y, np.array([0.1]), teacher)
    assert np.isfinite(losses).all()


def test_output_order_is_fitted_saved_and_restored(corpus, tmp_path):
    V = corpus.vocab.size
    model_cfg, train_cfg = make_configs("lecture", vocab_size=V, hidden=32, emb_dim=8, softmax="adaptive",
                                        softmax_head=16, steps=20, batch_size=32, eval_interval=10,
                                        eval_examples=500, optimizer="adamw", lr=1e-2, schedule="constant")
    result = train(corpus, model_cfg, train_cfg, out=tmp_path / "run", progress=False)
    counts = np.bincount(corpus.encoded("train").ids, minlength=V)
    expected = softmax.frequency_order(counts)
    assert torch.equal(result.model.output_order, expected) and not torch.equal(expected, torch.arange(V))
    assert expected[0] == 0 or counts[0] < counts.max()  # the boundary token, a target per word, ranks high
    run = load_run(tmp_path / "run")
    assert torch.equal(run.model.output_order, expected)
    dev = corpus.encoded("dev")
    assert split_nll(model_predictor(run.model), dev) == pytest.approx(result.summary["dev_loss"], rel=1e-6)
    words = sample(model_predictor(run.model), run.vocab, 10, seed=0)
    assert len(words) == 10


def test_an_adaptive_model_learns_a_list_in_many_scripts(corpus):
    V = corpus.vocab.size
    assert V > 200
    model_cfg, train_cfg = make_configs("default", vocab_size=V, hidden=64, emb_dim=8, block_size=4, layers=1,
                                        dropout=0.0, softmax="adaptive", softmax_head=16, steps=400, batch_size=64,
                                        lr=1e-2, schedule="constant", eval_interval=400, eval_examples=2000)
    assert len(model_cfg.output_layout().tails) == 2
    model = MLP(model_cfg, seed=0)
    model.observe_training_data(corpus.encoded("train"))
    dev = corpus.encoded("dev")
    before = split_nll(model_predictor(model), dev)
    result = train(corpus, model_cfg, train_cfg, progress=False)
    after = result.summary["dev_loss"]
    assert result.status == "completed" and result.summary["engine"] == "autograd"
    # the unigram entropy of the list is about 4.3 nats; syllables and scripts make it learnable below
    assert after < before - 1.0 and after < 3.5, (before, after)
    assert after == pytest.approx(split_nll(model_predictor(result.model), dev), rel=1e-6)


# ----------------------------------------------------------------------------------------
# The same layer as the lm_head of the other models

HEADED = [n for n in models.REGISTRY if n not in ("mlp", "bigram")]
SMALL = {"emb_dim": 8, "hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0}


def small_adaptive(name: str, vocab_size: int, **overrides):
    sizes = {k: v for k, v in SMALL.items() if k in models.config_fields(name)}
    return make_configs(model=name, vocab_size=vocab_size, softmax="adaptive", softmax_head=4,
                        **{**sizes, **overrides})


def test_every_model_with_an_output_layer_has_the_setting():
    assert set(HEADED) == {"rnn", "gru", "bow", "transformer", "wavenet"}
    for name in HEADED:
        assert make_configs(model=name, vocab_size=27)[0].softmax == "full"
        assert make_configs(model=name, vocab_size=3653)[0].softmax == "adaptive"


@pytest.mark.parametrize("name", HEADED)
def test_lm_head_log_probs_sum_to_one_and_the_training_loss_is_their_cross_entropy(name, corpus):
    cfg, _ = small_adaptive(name, corpus.vocab.size)
    model = models.build(cfg, seed=0).double()
    assert isinstance(model.lm_head, softmax.AdaptiveSoftmax) and len(model.lm_head.layout.tails) == 3
    model.observe_training_data(corpus.encoded("train"))
    assert not torch.equal(model.lm_head.output_order, torch.arange(cfg.vocab_size))
    X, Y = corpus.encoded("dev").tensors(cfg.block_size)
    X, Y = X[:300], Y[:300]
    model.eval()
    with torch.no_grad():
        log_probs = model(X)[0]
        assert torch.allclose(log_probs.exp().sum(-1), torch.ones(len(X), dtype=torch.float64), atol=1e-10)
        assert torch.allclose(model.logits_fn()(X), log_probs, atol=1e-10)
    model.train()
    logits, loss = model(X, Y)
    assert logits is None
    model.needs_logits = True
    log_probs, same = model(X, Y)
    if model.sequence:  # every column of the window predicts its next character
        targets = dense_targets(trim_padding(X), Y)
        assert log_probs.shape == (*targets.shape, cfg.vocab_size)
        expected = F.nll_loss(log_probs.reshape(-1, cfg.vocab_size), targets.reshape(-1), ignore_index=-1)
    else:
        expected = F.nll_loss(log_probs, Y)
    assert torch.allclose(loss, expected, atol=1e-10) and torch.allclose(same, expected, atol=1e-10)


@pytest.mark.parametrize("name", HEADED)
def test_lm_head_trains_and_its_order_survives_a_checkpoint(name, corpus, tmp_path):
    cfg, tcfg = small_adaptive(name, corpus.vocab.size, steps=30, batch_size=16, lr=1e-2, optimizer="adamw",
                               schedule="constant", eval_interval=10, eval_examples=500)
    result = train(corpus, cfg, tcfg, out=tmp_path / "run", progress=False)
    assert result.status == "completed" and result.summary["dev_loss"] < math.log(corpus.vocab.size)
    run = load_run(tmp_path / "run")
    expected = softmax.frequency_order(np.bincount(corpus.encoded("train").ids, minlength=cfg.vocab_size))
    assert torch.equal(run.model.lm_head.output_order, expected)
    dev = corpus.encoded("dev")
    assert split_nll(model_predictor(run.model), dev) == pytest.approx(result.summary["dev_loss"], rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("name", ["mlp", *HEADED])
def test_trains_on_cuda(name, corpus):
    cfg, tcfg = small_adaptive(name, corpus.vocab.size, steps=20, batch_size=16, lr=1e-2, optimizer="adamw",
                               eval_examples=500, engine="auto", device="cuda")
    result = train(corpus, cfg, tcfg, progress=False)
    assert result.status == "completed" and result.summary["device"] == "cuda"
    model = result.model.eval()
    X, _ = corpus.encoded("dev").tensors(cfg.block_size)
    with torch.no_grad():
        log_probs = model.logits_fn()(X[:100].cuda())
    assert log_probs.is_cuda and torch.allclose(log_probs.exp().sum(-1), torch.ones(100, device="cuda"), atol=1e-4)
    assert len(sample(model_predictor(model), corpus.vocab, 5, seed=0)) == 5


@pytest.mark.parametrize("name", ["mlp", *HEADED])
def test_a_fresh_model_predicts_the_unigram_distribution(name, corpus):
    """fit_output_prior: a fresh model's first prediction is the training split's character
    frequencies (its initial loss near the unigram entropy, far below log V), whatever the
    context; a model of the lecture's randn init keeps its randn biases."""
    train_ids = corpus.encoded("train").ids
    V = corpus.vocab.size
    counts = np.bincount(train_ids, minlength=V) + 0.5
    unigram = torch.from_numpy(np.log(counts / counts.sum()))
    entropy = float(-(unigram.exp() * unigram).sum())
    cfg, _ = small_adaptive(name, V) if name != "mlp" else make_configs(
        model="mlp", vocab_size=V, softmax="adaptive", softmax_head=4, block_size=3, emb_dim=4, hidden=6)
    model = models.build(cfg, seed=0).double()
    model.observe_training_data(corpus.encoded("train"))
    model.eval()
    X, Y = corpus.encoded("dev").tensors(cfg.block_size)
    with torch.no_grad():
        log_probs = model.logits_fn()(X[:500])
    assert (log_probs - unigram).abs().max() < 0.5  # small output weights: near the prior everywhere
    assert float(-log_probs.gather(1, Y[:500, None]).mean()) < math.log(V) - 1.0
    assert abs(float(-(log_probs.exp() * log_probs).sum(-1).mean()) - entropy) < 0.2
    if name == "mlp":
        lecture = MLP(replace(cfg, init="randn"), seed=0)
        drawn = lecture.b_head.detach().clone()
        lecture.observe_training_data(corpus.encoded("train"))
        assert torch.equal(lecture.b_head.detach(), drawn)
