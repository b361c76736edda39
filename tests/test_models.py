"""Every registered model (models.REGISTRY) through the public API, and the sequence models
against straightforward references written from makemore.py's equations.

A model added to the registry is tested here without a line more: it must fit one batch,
survive a checkpoint round trip, sample and score, give the same logits by logits_fn as by
forward, and build the same weights from the same seed. A sequence model (Model.sequence)
must also ignore the padding before its sequence.
"""

import dataclasses
import math
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from makemore import cli, config, models
from makemore.config import make_configs
from makemore.data import Examples, load_corpus
from makemore.models.base import Model, ModelConfig, last_position_loss, seeded, setting
from makemore.predict import model_predictor, split_nll
from makemore.runs import load_run
from makemore.sampling import sample, score
from makemore.fit import train

from conftest import make_words

# Small sizes for every setting a model may have (each model takes the ones it has).
SMALL = {"emb_dim": 8, "hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0}
SEQUENCE_MODELS = [n for n in models.REGISTRY if models.model_class(n).sequence]


def small_configs(name: str, vocab_size: int, **overrides):
    fields = models.config_fields(name)
    sizes = {k: v for k, v in SMALL.items() if k in fields}
    return make_configs(model=name, vocab_size=vocab_size, **{**sizes, **overrides})


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(make_words(200)) + "\n", encoding="utf-8")
    return load_corpus(path)


def one_batch(block_size: int, vocab_size: int, rows: int = 6):
    """Rows with distinct first and distinct last characters, no padding: every prefix of every
    row is distinct, so every target (the dense ones too) is a function of what precedes it."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(1, vocab_size, (rows, block_size), generator=g)
    idx[:, 0] = torch.arange(1, rows + 1)
    idx[:, -1] = torch.randperm(rows, generator=g) + 1
    return idx, torch.randint(0, vocab_size, (rows,), generator=g)


@pytest.mark.parametrize("name", models.REGISTRY)
def test_overfits_one_batch(name):
    cfg, _ = small_configs(name, vocab_size=7)
    model = models.build(cfg, seed=0)
    idx, y = one_batch(cfg.block_size, cfg.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(300):
        _, loss = model(idx, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, loss = model(idx, y)
    assert loss.item() < 0.05, f"{name}: eval loss {loss.item():.3f} after 300 steps on one batch"


@pytest.mark.parametrize("name", models.REGISTRY)
def test_checkpoint_round_trip_sample_and_score(name, corpus, tmp_path):
    cfg, tcfg = small_configs(name, corpus.vocab.size, steps=30, batch_size=16, lr=1e-2, optimizer="adamw",
                              schedule="constant", eval_interval=10, eval_examples=500, engine="autograd")
    result = train(corpus, cfg, tcfg, out=tmp_path / "run", progress=False)
    assert result.status == "completed" and result.summary["model"] == name
    run = load_run(tmp_path / "run")
    assert type(run.model) is models.model_class(name) and not run.model.training
    dev = corpus.encoded("dev")
    X, Y = dev.tensors(cfg.block_size)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(result.model(X)[0], run.model(X)[0])
    fresh = models.build(cfg, seed=tcfg.seed)
    for (n, buf), (_, init) in zip(run.model.named_buffers(), fresh.named_buffers()):
        assert not torch.equal(buf, init), f"buffer {n} came back as initialised: not saved with the weights"

    predictor = model_predictor(run.model)
    words = sample(predictor, run.vocab, 20, seed=0)
    assert len(words) == 20 and all(set(w) <= set(run.vocab.chars[1:]) for w in words)
    assert sample(predictor, run.vocab, 20, seed=0) == words
    # scoring: each word's NLL is the model's cross-entropy on that word's examples
    scored = score(predictor, run.vocab, ["mana", "rito"])
    for r in scored:
        Xw, Yw = Examples.from_words([r["word"]], run.vocab).tensors(cfg.block_size)
        with torch.no_grad():
            expected = F.cross_entropy(run.model(Xw)[0], Yw, reduction="sum").item()
        assert r["nll"] == pytest.approx(expected, rel=1e-5)
    assert split_nll(predictor, dev) == pytest.approx(result.summary["dev_loss"], rel=1e-6)
    assert result.summary["dev_loss"] < math.log(corpus.vocab.size)


@pytest.mark.parametrize("name", models.REGISTRY)
def test_logits_fn_equals_forward_in_eval_mode(name, corpus):
    cfg, _ = small_configs(name, corpus.vocab.size)
    model = models.build(cfg, seed=3).eval()
    X, _ = corpus.encoded("train").tensors(cfg.block_size)
    X = X.repeat(1 + 2500 // len(X), 1)[:2500]  # more rows than one slice of base.sequence_logits
    assert len(X) == 2500
    with torch.no_grad():
        assert torch.allclose(model.logits_fn()(X), model(X)[0], atol=1e-5)


@pytest.mark.parametrize("name", models.REGISTRY)
def test_same_seed_same_weights_and_global_rng_untouched(name):
    cfg, _ = small_configs(name, vocab_size=11)
    state = torch.get_rng_state()
    a, b, c = (models.build(cfg, seed=s).state_dict() for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[n], b[n]) for n in a)
    if any(t.is_floating_point() and t.numel() > 1 and t.std() > 0 for t in a.values()):  # not all-constant (bigram)
        assert any(not torch.equal(a[n], c[n]) for n in a)


# ----------------------------------------------------------------------------------------
# Sequence models: references from makemore.py's equations, on one unpadded sequence


def ref_rnn(m, seq):
    h = m.start
    out = []
    for x in m.wte.weight[seq]:
        h = torch.tanh(m.cell.xh_to_h(torch.cat([x, h])))
        out.append(m.lm_head(h))
    return torch.stack(out)


def ref_gru(m, seq):
    c, h = m.cell, m.start
    out = []
    for x in m.wte.weight[seq]:
        xh = torch.cat([x, h])
        r, z = torch.sigmoid(c.xh_to_r(xh)), torch.sigmoid(c.xh_to_z(xh))
        hbar = torch.tanh(c.xh_to_hbar(torch.cat([x, r * h])))
        h = (1 - z) * h + z * hbar
        out.append(m.lm_head(h))
    return torch.stack(out)


def ref_bow(m, seq):
    x = m.wte.weight[seq] + m.wpe.weight[: len(seq)]
    x = x + x.cumsum(0) / torch.arange(1, len(seq) + 1)[:, None]
    x = x + m.block.c_proj(torch.tanh(m.block.c_fc(x)))
    return m.lm_head(x)


def ref_transformer(m, seq):
    T = len(seq)
    x = m.wte.weight[seq] + m.wpe.weight[:T]
    for b in m.blocks:
        a = b.attn
        q, k, v = (t.view(T, a.heads, -1).transpose(0, 1) for t in a.c_attn(b.ln_1(x)).chunk(3, dim=1))
        att = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf")).softmax(-1)
        x = x + a.c_proj((att @ v).transpose(0, 1).reshape(T, -1))
        h = b.c_fc(b.ln_2(x))
        gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's
        x = x + b.c_proj(gelu)
    return m.lm_head(m.ln_f(x))


REFERENCES = {"rnn": ref_rnn, "gru": ref_gru, "bow": ref_bow, "transformer": ref_transformer}


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequence_models_ignore_padding(name):
    cfg, _ = small_configs(name, vocab_size=9, block_size=8)
    model = models.build(cfg, seed=1).eval()
    word = [4, 2, 7]
    with torch.no_grad():
        # [0, w] (width 4) and [0, 0, 0, 0, 0, w] (width 8): the same sequence <START> w
        logits = [model(torch.tensor([[0] * pad + word]))[0] for pad in range(1, cfg.block_size - len(word) + 1)]
        for other in logits[1:]:
            assert torch.allclose(other, logits[0], atol=1e-5)
        # rows of different padding and different lengths in one batch: each as if alone
        rows = [[0] * 5 + [4, 2, 7], [0, 0, 0, 0, 0, 0, 0, 3], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0] + [5] * 6]
        batched = model(torch.tensor(rows))[0]
        for i, row in enumerate(rows):
            assert torch.allclose(batched[i], model(torch.tensor([row]))[0][0], atol=1e-5)
        if name in REFERENCES:
            ref = REFERENCES[name](model, torch.tensor([0] + word))
            assert torch.allclose(logits[0][0], ref[-1], atol=1e-5)


@pytest.mark.parametrize("name", [n for n in SEQUENCE_MODELS if n in REFERENCES])
def test_sequence_training_loss_is_every_position_of_the_word(name):
    """In training mode the loss of a window <START> w_1..w_n with target y is the mean NLL of
    w_1, ..., w_n, y, each given what precedes it (makemore.py's objective)."""
    cfg, _ = small_configs(name, vocab_size=9, block_size=8)
    model = models.build(cfg, seed=2).train()
    word, y = [4, 2, 7], 5
    _, loss = model(torch.tensor([[0] * 5 + word]), torch.tensor([y]))
    ref = REFERENCES[name](model, torch.tensor([0] + word))
    assert torch.allclose(loss, F.cross_entropy(ref, torch.tensor(word + [y])), atol=1e-5)


@pytest.mark.parametrize("name", models.REGISTRY)
def test_sequence_models_train_on_whole_words(name, corpus, monkeypatch):
    """A sequence model's minibatches are windows that end at a word's end (with a window longer
    than every word): each character is predicted once per draw of its word, as eval weighs it.
    Models that predict one character per window draw every position, as the lecture does."""
    import numpy as np

    from makemore.batches import Minibatches

    drawn = []
    real_at = Minibatches.at

    def at(self, step, last):
        idx, y = real_at(self, step, last)
        drawn.append(y.copy())
        return idx, y

    monkeypatch.setattr(Minibatches, "at", at)
    sequence = models.model_class(name).sequence
    cfg, tcfg = small_configs(name, corpus.vocab.size, steps=8, batch_size=16, eval_interval=8, eval_examples=100,
                              **({"block_size": 16} if sequence else {}))
    train(corpus, cfg, tcfg, progress=False)
    targets = np.concatenate([y.reshape(-1) for y in drawn])
    if sequence:
        assert np.all(targets == 0)  # the end token: every window holds a whole word
    else:
        assert np.mean(targets == 0) < 0.5


# ----------------------------------------------------------------------------------------
# WaveNet (makemore part 5)


def test_wavenet_is_the_lectures_model():
    cfg, tcfg = make_configs("wavenet")
    model = models.build(cfg)
    assert model.num_params() == 76_579  # the notebook's count
    assert (tcfg.optimizer, tcfg.batch_size, tcfg.steps, tcfg.lr) == ("sgd", 32, 200_000, 0.1)
    from makemore.batches import lr_at
    assert lr_at(tcfg, 149_999) == 0.1 and lr_at(tcfg, 150_000) == pytest.approx(0.01)  # `0.1 if i < 150000 else 0.01`


def test_wavenet_batchnorm_is_over_batch_and_positions():
    """Training: each channel is normalised over the batch *and* the positions, dims (0, 1)
    (the lecture's fix); the running statistics are buffers that eval mode uses."""
    from makemore.models.wavenet import BatchNorm1d

    bn = BatchNorm1d(5)
    x = torch.randn(32, 4, 5) * 3 + 2
    y = bn(x)
    mean = x.mean((0, 1))
    var = x.var((0, 1), unbiased=False)
    assert torch.allclose(y, (x - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert torch.allclose(bn.running_mean, 0.1 * mean, atol=1e-6)
    assert {n for n, _ in bn.named_buffers()} == {"running_mean", "running_var"}
    bn.eval()
    assert torch.allclose(bn(x[:1]), (x[:1] - bn.running_mean) / torch.sqrt(bn.running_var + 1e-5), atol=1e-5)


@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_weight_drop_thins_the_recurrent_weights_once_per_window(name, monkeypatch):
    """DropConnect (RNNConfig.weight_drop) drops hidden-to-hidden weights, not states, with one
    mask for every position of the window: with a mask that drops them all, the training loss
    is that of the same model with those weights zero; in eval mode nothing is dropped."""
    cfg, _ = small_configs(name, vocab_size=9, block_size=8, weight_drop=0.5)
    model = models.build(cfg, seed=3).train()
    with torch.no_grad():  # torch's small initial weights barely use the recurrence: make it count
        for layer in model.cell.children():
            layer.weight.mul_(4)
    masked, dropout = [], F.dropout

    def drop_whole_matrices(x, p=0.5, training=True, inplace=False):
        if x.dim() == 2:  # a weight matrix (embeddings and states are (B, T, C))
            masked.append(p)
            return torch.zeros_like(x)
        return dropout(x, p, training, inplace)

    monkeypatch.setattr(F, "dropout", drop_whole_matrices)
    word, y = [4, 2, 7, 1, 3], 5
    _, loss = model(torch.tensor([[0] * 3 + word]), torch.tensor([y]))
    assert masked == [0.5] * {"rnn": 1, "gru": 2}[name]  # once per window, not once per position

    cut = models.build(dataclasses.replace(cfg, weight_drop=0.0)).train()
    cut.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in cut.cell.children():
            layer.weight[:, cfg.emb_dim:] = 0
    ref = REFERENCES[name](cut, torch.tensor([0] + word))
    assert torch.allclose(loss, F.cross_entropy(ref, torch.tensor(word + [y])), atol=1e-5)
    undropped = F.cross_entropy(REFERENCES[name](model, torch.tensor([0] + word)), torch.tensor(word + [y]))
    assert not torch.allclose(loss, undropped, atol=1e-3)  # the test can tell the two apart

    masked.clear()
    model.eval()(torch.tensor([[0] * 3 + word]))
    assert masked == []


def test_model_settings_are_checked():
    from makemore.errors import UserError

    for kwargs in (dict(model="wavenet", block_size=6), dict(model="transformer", emb_dim=10, heads=4),
                   dict(model="bigram", block_size=3), dict(model="gru", hidden=0)):
        with pytest.raises(UserError):
            make_configs(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("name", models.REGISTRY)
def test_trains_on_cuda(name, corpus):
    cfg, tcfg = small_configs(name, corpus.vocab.size, steps=20, batch_size=16, lr=1e-2, optimizer="adamw",
                              eval_examples=500, engine="autograd", device="cuda")
    result = train(corpus, cfg, tcfg, progress=False)
    assert result.status == "completed" and result.summary["device"] == "cuda"
    assert next(result.model.parameters()).is_cuda
    words = sample(model_predictor(result.model), corpus.vocab, 5, seed=0)
    assert len(words) == 5


# ----------------------------------------------------------------------------------------
# Adding a model: one module (a config, a Model, PRESETS) and one registry entry


@dataclass
class MeanConfig(ModelConfig):
    """A test model: logits from the mean of the context's embeddings."""

    name = "mean"
    emb_dim: int = setting(4, "size of each character's embedding", min=1)


class MeanModel(Model):
    Config = MeanConfig

    def __init__(self, cfg: MeanConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):
            self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.lm_head = nn.Linear(cfg.emb_dim, cfg.vocab_size)

    def forward(self, idx, targets=None):
        logits = self.lm_head(self.wte(idx).mean(1))
        return logits, last_position_loss(logits, targets)


def test_a_new_model_is_one_module_and_one_registry_line(monkeypatch, words_file, tmp_path, capsys):
    module = types.ModuleType("makemore.models.mean")
    module.MODEL, module.DEFAULT_PRESET = MeanModel, "mean"
    module.PRESETS = {"mean": dict(block_size=3, emb_dim=6, batch_size=32, steps=40, lr=1e-2, optimizer="adamw")}
    monkeypatch.setitem(models.MODULES, "mean", module)  # what importing models/mean.py does
    monkeypatch.setattr(models, "REGISTRY", models.REGISTRY + ("mean",))  # the registry line
    # config.PRESETS is gathered from the models once, when config is imported
    monkeypatch.setattr(config, "PRESETS", models.presets())

    run = tmp_path / "mean"
    assert cli.main(["train", "--data", str(words_file), "--model", "mean", "--emb-dim", "5", "--quiet",
                     "--out", str(run)]) == 0
    loaded = load_run(run)
    assert isinstance(loaded.model, MeanModel) and loaded.model_cfg.emb_dim == 5
    capsys.readouterr()
    assert cli.main(["sample", str(run), "-n", "3", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli.main(["score", str(run), "mana", "--json"]) == 0
    assert '"nll"' in capsys.readouterr().out
    # a setting of another model is refused with a hint
    assert cli.main(["train", "--data", str(words_file), "--model", "mean", "--heads", "2",
                     "--out", str(tmp_path / "x")]) == 1
    assert "does not apply to --model mean" in capsys.readouterr().err
