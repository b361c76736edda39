"""The RNN and the GRU run two ways (models/rnn.py, RNN.recurrence): a cell loop in Python and
torch's fused recurrent kernel (torch.rnn_tanh, torch.gru: cuDNN on a GPU, ATen's loop on a
CPU). They must be one function: the same logits, losses and gradients, with rows of different
padding, with the weight drop's mask drawn from the same seed. makemore.py's GRU cell (Cho et
al. 2014) is not PyTorch's (the reset gate sits elsewhere), so it keeps its loop and PyTorch's
cell is a setting of its own (--cell cudnn).
"""

import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from makemore import cli, models
from makemore.config import make_configs, model_from_dict, model_to_dict
from makemore.data import load_corpus
from makemore.errors import UserError
from makemore.models.gru import CuDNNGRUCell, GRUCell
from makemore.models.rnn import FUSED_DEVICES
from makemore.runs import load_run
from makemore.fit import train

from conftest import make_words

# (model, settings): the cells that have a fused kernel
FUSED = [("rnn", {}), ("gru", {"cell": "cudnn"})]
FUSED_IDS = ["rnn", "gru-cudnn"]
# rows of different padding, lengths and starts (column 0 is the boundary token in most), one
# row with no padding at all, one row with one padding token (its sequence starts at column 0)
ROWS = [[0] * 5 + [4, 2, 7], [0] * 7 + [3], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0] + [5] * 6,
        [0] + [6, 1, 1, 2, 8, 3, 2], [0, 0, 0, 7, 7, 1, 2, 4]]
TARGETS = [1, 0, 3, 4, 0, 2]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread


def small(name: str, vocab_size: int = 9, **overrides):
    return make_configs(model=name, vocab_size=vocab_size, emb_dim=5, hidden=7, block_size=8, **overrides)


def build64(name: str, device: str = "cpu", seed: int = 1, **overrides):
    cfg, _ = small(name, **overrides)
    model = models.build(cfg, seed=seed).to(device=device, dtype=torch.float64)
    with torch.no_grad():  # torch's small initial weights barely use the recurrence: make it count
        for layer in model.cell.children():
            layer.weight.mul_(3)
    return model


def run(model, recurrence: str, training: bool, seed: int = 5, device: str = "cpu"):
    """logits, loss and every parameter's gradient of one forward and backward pass."""
    model.recurrence = recurrence
    model.train(training)
    model.zero_grad(set_to_none=True)
    idx, y = torch.tensor(ROWS, device=device), torch.tensor(TARGETS, device=device)
    torch.manual_seed(seed)  # the dropout masks: the same draws for both ways
    if device == "cuda":
        torch.cuda.manual_seed_all(seed)
    logits, loss = model(idx, y)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, atol=1e-12):
    (la, lossa, ga), (lb, lossb, gb) = a, b
    assert la.shape == lb.shape
    assert torch.allclose(la, lb, atol=atol, rtol=0), (la - lb).abs().max()
    assert torch.allclose(lossa, lossb, atol=atol, rtol=0)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=atol, rtol=0), (n, (ga[n] - gb[n]).abs().max())


# ----------------------------------------------------------------------------------------
# the fused kernel is the cell loop


@pytest.mark.parametrize("name, settings", FUSED, ids=FUSED_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("weight_drop, dropout", [(0.0, 0.0), (0.4, 0.0), (0.4, 0.3)],
                         ids=["plain", "weight-drop", "weight-drop+dropout"])
def test_fused_equals_the_cell_loop(name, settings, training, weight_drop, dropout):
    """float64, CPU: the same logits (every column's in training, the last in eval), loss and
    gradient of every parameter, over rows of different padding; with a weight drop (and
    dropout on embeddings and states) under the same seed, the same masks."""
    model = build64(name, weight_drop=weight_drop, dropout=dropout, **settings)
    loop, fused = run(model, "loop", training), run(model, "fused", training)
    assert_same(loop, fused)
    assert loop[0].shape == ((len(ROWS), 8, 9) if training else (len(ROWS), 9))
    assert all(g.abs().sum() > 0 for g in loop[2].values())  # every parameter is reached
    if training and weight_drop:  # the mask is drawn and used: not the loss without it
        undropped = build64(name, weight_drop=0.0, dropout=dropout, **settings)
        assert not torch.allclose(run(undropped, "fused", True)[1], fused[1])
        assert not torch.allclose(run(model, "fused", True, seed=6)[1], fused[1])  # another seed, another mask
    if training:  # training without targets: the last column's logits, as out of training
        model.train()
        last = []
        for model.recurrence in ("loop", "fused"):
            torch.manual_seed(5)
            with torch.no_grad():
                last.append(model(torch.tensor(ROWS))[0])
        assert last[0].shape == (len(ROWS), 9) and torch.allclose(last[0], last[1], atol=1e-12)


@pytest.mark.parametrize("name, settings", FUSED, ids=FUSED_IDS)
def test_fused_ignores_padding_and_reads_rows_alone(name, settings):
    """What base.window_layout promises, by the kernel: a row's logits do not depend on its
    padding, nor on the other rows of its batch."""
    model = build64(name, **settings).eval()
    model.recurrence = "fused"
    with torch.no_grad():
        batched = model(torch.tensor(ROWS))[0]
        for i, row in enumerate(ROWS):
            alone = model(torch.tensor([row]))[0][0]
            assert torch.allclose(batched[i], alone, atol=1e-12)
            padding = sum(1 for c in row if c == 0)
            for pad in range(padding):  # <START> w with less padding before it: the same sequence
                shorter = [0] * pad + row[padding - 1:]
                assert torch.allclose(model(torch.tensor([shorter]))[0][0], alone, atol=1e-12)


def test_the_weight_drop_mask_is_drawn_once_per_window_on_the_recurrent_matrix(monkeypatch):
    """Both ways draw one mask for the window, on the whole recurrent matrix W_hh (3*hidden x
    hidden for PyTorch's GRU: its three gates'), the same shape, so one seed is one mask."""
    shapes = []
    dropout = F.dropout

    def recording(x, p=0.5, training=True, inplace=False):
        if x.dim() == 2:  # a weight matrix (embeddings and states are (B, T, C))
            shapes.append(tuple(x.shape))
        return dropout(x, p, training, inplace)

    monkeypatch.setattr(F, "dropout", recording)
    for (name, settings), expected in zip(FUSED, [(7, 7), (21, 7)]):
        model = build64(name, weight_drop=0.3, **settings)
        for recurrence in ("loop", "fused"):
            shapes.clear()
            run(model, recurrence, training=True)
            assert shapes == [expected], (name, recurrence)
            shapes.clear()
            run(model, recurrence, training=False)
            assert shapes == []  # eval: nothing dropped


# ----------------------------------------------------------------------------------------
# the cells are PyTorch's modules: the RNN exactly, the GRU only as --cell cudnn


def unpadded_states(model, seq):
    """The states along one unpadded sequence, by the model's recurrence (eval mode)."""
    model.eval()
    with torch.no_grad():
        x = model.wte(seq[None])
        start, pos = torch.zeros(1, dtype=torch.long), torch.arange(len(seq))[None]
        h0 = model.start[None]
        return model._loop_states(x, h0, start, 0.0)[0], model._fused_states(x, h0, start, pos, 0.0)[0]


def test_the_rnn_cell_is_nn_rnn():
    """Elman's tanh RNN: W [x; h] + b splits into nn.RNN's W_ih x + b_ih + W_hh h + b_hh."""
    model = build64("rnn")
    E, W, b = 5, model.cell.xh_to_h.weight, model.cell.xh_to_h.bias
    ref = nn.RNN(5, 7, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(W[:, :E]), ref.weight_hh_l0.copy_(W[:, E:])
        ref.bias_ih_l0.copy_(b), ref.bias_hh_l0.zero_()
    seq = torch.tensor([0, 4, 2, 7, 1])
    with torch.no_grad():
        expected = ref(model.wte(seq[None]), model.start[None, None])[0][0]
    for states in unpadded_states(model, seq):
        assert torch.allclose(states, expected, atol=1e-12)


def test_the_cudnn_cell_is_nn_gru():
    """--cell cudnn's loop, written from nn.GRU's equations, is nn.GRU with its weights."""
    model = build64("gru", cell="cudnn")
    cell = model.cell
    assert isinstance(cell, CuDNNGRUCell)
    ref = nn.GRU(5, 7, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(cell.x_to_gates.weight), ref.weight_hh_l0.copy_(cell.h_to_gates.weight)
        ref.bias_ih_l0.copy_(cell.x_to_gates.bias), ref.bias_hh_l0.copy_(cell.h_to_gates.bias)
    seq = torch.tensor([0, 4, 2, 7, 1])
    with torch.no_grad():
        expected = ref(model.wte(seq[None]), model.start[None, None])[0][0]
    for states in unpadded_states(model, seq):
        assert torch.allclose(states, expected, atol=1e-12)


def test_makemores_gru_is_not_nn_gru():
    """Why --cell exists. makemore.py's cell (Cho et al. 2014) resets h before the recurrent
    product, tanh(W_h [x; r * h] + b); nn.GRU after it, tanh(W_in x + b_in + r * (W_hn h +
    b_hn)). With the closest mapping of weights (z there is 1 - z here: its weights negated)
    the two differ, and agree exactly once the reset gate is held at 1: the reset's place is
    the whole difference, and W (r * h) = r * (W h) for every r only if W is diagonal."""
    model = build64("gru")
    cell, E = model.cell, 5
    assert isinstance(cell, GRUCell)
    r, z, hbar = cell.xh_to_r, cell.xh_to_z, cell.xh_to_hbar
    ref = nn.GRU(5, 7, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.cat([r.weight[:, :E], -z.weight[:, :E], hbar.weight[:, :E]]))
        ref.weight_hh_l0.copy_(torch.cat([r.weight[:, E:], -z.weight[:, E:], hbar.weight[:, E:]]))
        ref.bias_ih_l0.copy_(torch.cat([r.bias, -z.bias, hbar.bias])), ref.bias_hh_l0.zero_()
    seq = torch.tensor([0, 4, 2, 7, 1, 3])

    def gap():
        model.eval()
        with torch.no_grad():
            x = model.wte(seq[None])
            ours = model._loop_states(x, model.start[None], torch.zeros(1, dtype=torch.long), 0.0)[0]
            return (ours - ref(x, model.start[None, None])[0][0]).abs().max().item()

    assert gap() > 1e-3
    with torch.no_grad():
        r.bias.fill_(60.0), ref.bias_ih_l0[:7].fill_(60.0)  # sigmoid(60 + ...) = 1 in float64
    assert gap() < 1e-12


# ----------------------------------------------------------------------------------------
# which way runs


def test_cho_is_the_default_and_unchanged():
    """Every existing run, preset and figure is makemore.py's GRU: the default cell, its loop,
    its weights' names; a config.json written before --cell existed loads as it."""
    assert models.config_class("gru")().cell == "cho"
    for preset in ("gru", "gru-long", "best"):
        cfg, _ = make_configs(preset)
        assert cfg.cell == "cho"
    cfg, _ = small("gru")
    model = models.build(cfg)
    assert type(model.cell) is GRUCell and not model.fused(torch.device("cpu"))
    assert not model.fused(torch.device("cuda"))  # no kernel anywhere: it is not cuDNN's GRU
    assert set(model.state_dict()) == {"start", "wte.weight", "lm_head.weight", "lm_head.bias"} | {
        f"cell.xh_to_{g}.{p}" for g in ("z", "r", "hbar") for p in ("weight", "bias")}
    model.recurrence = "fused"
    with pytest.raises(ValueError, match="no fused kernel"):
        model(torch.tensor(ROWS))
    old = model_to_dict(cfg)
    del old["cell"]  # a run from before the setting
    assert model_from_dict(old) == cfg


def test_auto_runs_the_kernel_where_it_is_measured_faster():
    """recurrence "auto": the kernel on the devices of FUSED_DEVICES (a GPU; the CPU by
    benchmarks/bench.py's item 11), for the cells that have one."""
    assert "cuda" in FUSED_DEVICES
    for name, settings in FUSED:
        cfg, _ = small(name, **settings)
        model = models.build(cfg)
        assert model.recurrence == "auto"
        for device in ("cpu", "cuda"):
            assert model.fused(torch.device(device)) == (device in FUSED_DEVICES)
        model.recurrence = "loop"
        assert not model.fused(torch.device("cuda"))
    cfg, _ = small("rnn")
    model = models.build(cfg)
    model.recurrence = "cudnn"
    with pytest.raises(ValueError, match="auto, loop or fused"):
        model.fused(torch.device("cpu"))


def test_cell_setting_is_checked_and_is_a_flag():
    with pytest.raises(UserError, match="cell must be one of cho, cudnn"):
        make_configs(model="gru", cell="lstm")
    with pytest.raises(UserError, match="does not apply to --model rnn"):
        make_configs(model="rnn", cell="cudnn")
    from makemore.tune import model_space

    assert model_space("gru")[0]["cell"] == ["cho", "cudnn"]  # tune may choose PyTorch's cell
    assert "cell" not in model_space("rnn")[0]


def test_autocast_bfloat16_runs_the_kernel():
    """--precision bfloat16 trains under torch.autocast: the kernel runs under it as the loop
    does, close to float32."""
    for name, settings in FUSED:
        cfg, _ = small(name, **settings)
        model = models.build(cfg).train()
        model.recurrence = "fused"
        idx, y = torch.tensor(ROWS), torch.tensor(TARGETS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(idx, y)
        loss.backward()
        assert torch.isfinite(loss) and abs(loss.item() - model(idx, y)[1].item()) < 0.05


# ----------------------------------------------------------------------------------------
# --cell cudnn trains, saves and loads like any model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(make_words(200)) + "\n", encoding="utf-8")
    return load_corpus(path)


def test_cudnn_cell_trains_and_round_trips_through_a_checkpoint(corpus, tmp_path):
    cfg, tcfg = make_configs(model="gru", cell="cudnn", vocab_size=corpus.vocab.size, emb_dim=8, hidden=16,
                             weight_drop=0.2, steps=40, batch_size=16, lr=1e-2, optimizer="adamw",
                             schedule="constant", eval_interval=20, eval_examples=500, engine="autograd")
    result = train(corpus, cfg, tcfg, out=tmp_path / "run", progress=False)
    assert result.status == "completed" and result.summary["dev_loss"] < math.log(corpus.vocab.size)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["cell"] == "cudnn"
    run = load_run(tmp_path / "run")
    assert run.model_cfg == cfg and isinstance(run.model.cell, CuDNNGRUCell)
    X, _ = corpus.encoded("dev").tensors(cfg.block_size)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(result.model(X)[0], run.model(X)[0])
        run.model.recurrence = "loop"
        assert torch.allclose(result.model(X)[0], run.model(X)[0], atol=1e-5)


def test_train_cell_cudnn_from_the_command_line(words_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(words_file), "--model", "gru", "--cell", "cudnn", "--emb-dim", "8",
                     "--hidden", "16", "--steps", "20", "--eval-interval", "20", "--eval-examples", "200",
                     "--quiet", "--out", str(out)]) == 0
    assert load_run(out).model_cfg.cell == "cudnn"
    capsys.readouterr()
    assert cli.main(["train", "--data", str(words_file), "--model", "gru", "--cell", "lstm", "--quiet",
                     "--out", str(tmp_path / "x")]) == 1
    assert "cell must be one of cho, cudnn" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# CUDA: cuDNN's kernels (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@cuda
@pytest.mark.parametrize("name, settings", FUSED, ids=FUSED_IDS)
@pytest.mark.parametrize("weight_drop", [0.0, 0.4])
def test_cudnn_equals_the_cell_loop_on_cuda(name, settings, weight_drop):
    """cuDNN's kernel is the cell loop (float64; the gradients through it too, in eval mode as
    well), with no warning: the weights it is given are laid out in one buffer
    (rnn.fused_recurrence), so it need not copy them with a warning."""
    model = build64(name, device="cuda", weight_drop=weight_drop, **settings)
    assert model.fused(torch.device("cuda"))
    for training in (True, False):
        loop = run(model, "loop", training, device="cuda")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fused = run(model, "fused", training, device="cuda")
        assert_same(loop, fused, atol=1e-10)


@cuda
@pytest.mark.parametrize("name, settings", FUSED, ids=FUSED_IDS)
def test_cudnn_float32_and_autocast_on_cuda(name, settings):
    """float32: the same within float32's rounding once cuDNN may not multiply in TF32 (which
    it does by default, torch.backends.cudnn.allow_tf32, where the loop's cuBLAS products do
    not); autocast (--precision bfloat16) runs."""
    cfg, _ = small(name, **settings)
    model = models.build(cfg).cuda().train()
    loop = run(model, "loop", True, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            fused = run(model, "fused", True, device="cuda")
        assert_same(loop, fused, atol=1e-4)
        model.recurrence = "fused"
        idx, y = torch.tensor(ROWS, device="cuda"), torch.tensor(TARGETS, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(idx, y)
        loss.backward()
    assert abs(loss.item() - fused[1].item()) < 0.05


@cuda
def test_cudnn_cell_trains_on_cuda(corpus):
    cfg, tcfg = make_configs(model="gru", cell="cudnn", vocab_size=corpus.vocab.size, emb_dim=8, hidden=16,
                             weight_drop=0.2, steps=20, batch_size=16, lr=1e-2, optimizer="adamw",
                             eval_examples=500, engine="autograd", device="cuda")
    result = train(corpus, cfg, tcfg, progress=False)
    assert result.status == "completed" and result.summary["device"] == "cuda"

