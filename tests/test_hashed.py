"""The MLP's hashed context features (--hash-orders; models/mlp.py, after Mikolov et al. 2011's
hash-based direct features): the hash reads only the last k characters, the fast inference path
equals the forward pass, a step touches only the table rows its contexts hash to, the sparse
optimizer's state survives a checkpoint, ONNX computes them, and the paths that cannot say so."""

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch

from makemore import distributed, export
from makemore.config import make_configs
from makemore.data import load_corpus
from makemore.engines import AutogradEngine, make_engine
from makemore.errors import UserError
from makemore.fit import train
from makemore.fused import unsupported_reason
from makemore.models.mlp import MLP, context_hashes
from makemore.predict import model_predictor, split_nll
from makemore.runs import load_run
from makemore.sampling import sample

from test_softmax import many_script_words


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny products, one thread


def hashed_mlp(vocab_size: int = 40, seed: int = 0, **overrides) -> MLP:
    settings = dict(block_size=5, emb_dim=4, hidden=8, hash_orders=4, hash_bits=10, hash_dim=3, init="scaled",
                    **overrides)
    cfg, _ = make_configs("lecture", vocab_size=vocab_size, **settings)
    model = MLP(cfg, seed=seed).double()
    with torch.no_grad():  # a table that is not all zeros, so that it changes the state
        model.E_hash.normal_(generator=torch.Generator().manual_seed(seed))
    return model


def test_a_hash_reads_the_last_k_characters_only():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 50, (200, 6), generator=g)
    b = a.clone()
    b[:, :2] = torch.randint(0, 50, (200, 2), generator=g)  # other characters before the last four
    ha, hb = context_hashes(a, 6, 12), context_hashes(b, 6, 12)
    assert ha.shape == (200, 5) and int(ha.min()) >= 0 and int(ha.max()) < 2 ** 12
    assert torch.equal(ha[:, :3], hb[:, :3])  # orders 2..4 see the same characters
    changed = (a[:, 1] != b[:, 1])
    assert (ha[changed, 3] != hb[changed, 3]).float().mean() > 0.95  # order 5 sees the change
    # orders differ: the same pair of characters hashed as order 2 and as part of order 3
    assert (ha[:, 0] != ha[:, 1]).float().mean() > 0.95
    assert int(ha[:, 0].unique().numel()) > 150  # 200 random pairs spread over 4,096 rows


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_inference_tables_equal_the_forward_pass(softmax):
    model = hashed_mlp(softmax=softmax, softmax_head=8)
    model.eval()
    ctx = torch.randint(0, 40, (64, 5), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 40, (64,), generator=torch.Generator().manual_seed(2))
    logits, _ = model(ctx, y)
    torch.testing.assert_close(torch.log_softmax(model.logits_fn()(ctx), -1), torch.log_softmax(logits, -1))
    without = replace(model.cfg, hash_orders=0)
    assert not torch.allclose(torch.log_softmax(logits, -1),
                              torch.log_softmax(MLP(without, seed=0).double()(ctx)[0], -1))
    if softmax == "adaptive":
        lp = model.target_log_probs_fn()(ctx, y)
        torch.testing.assert_close(lp, torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1))


def test_hash_dropout_drops_whole_vectors_in_training_only():
    """--hash-dropout p: in training each (context, order) vector is kept with probability 1 - p
    and scaled by 1/(1 - p), as a reference built from the same random draw computes; in eval
    mode, and at p = 0, the term is the plain sum."""
    model = hashed_mlp(hash_dropout=0.5)
    ctx = torch.randint(0, 40, (256, 5), generator=torch.Generator().manual_seed(3))
    rows = context_hashes(ctx, model.cfg.hash_orders, model.cfg.hash_bits)
    plain = model.E_hash[rows].sum(1) @ model.W_hash
    model.eval()
    torch.testing.assert_close(model.hashed(ctx), plain)
    model.train()
    torch.manual_seed(7)
    dropped = model.hashed(ctx)
    torch.manual_seed(7)
    keep = (torch.rand(rows.shape) >= 0.5).double() / 0.5
    torch.testing.assert_close(dropped, (model.E_hash[rows] * keep[..., None]).sum(1) @ model.W_hash)
    assert 0.4 < float((keep == 0).double().mean()) < 0.6
    assert not torch.allclose(dropped, plain)
    no_dropout = hashed_mlp()
    no_dropout.train()
    torch.testing.assert_close(no_dropout.hashed(ctx), plain)


def test_a_step_moves_only_the_rows_its_contexts_hash_to_and_never_decays_them():
    model = hashed_mlp().float()
    cfg = model.cfg
    _, train_cfg = make_configs("lecture", vocab_size=40, optimizer="adamw", lr=0.01, weight_decay=0.5,
                                engine="autograd")
    engine = AutogradEngine([model], [train_cfg])
    assert engine.sparse_optimizers[0] is not None and all(p is not model.E_hash for p in engine.decayed[0])
    idx = np.random.default_rng(0).integers(0, 40, (1, 16, 5))
    y = np.random.default_rng(1).integers(0, 40, (1, 16))
    before = model.E_hash.detach().clone()
    engine.step(idx, y, np.array([0.01]))
    moved = (model.E_hash.detach() != before).any(1).nonzero().squeeze(1)
    rows = context_hashes(torch.as_tensor(idx[0]), cfg.hash_orders, cfg.hash_bits).unique()
    assert torch.equal(moved, rows)
    assert model.E_hash.grad is None or model.E_hash.grad.is_sparse


def test_the_sparse_optimizer_state_survives_a_checkpoint():
    model, twin = hashed_mlp().float(), hashed_mlp().float()
    _, train_cfg = make_configs("lecture", vocab_size=40, optimizer="adamw", lr=0.01, engine="autograd")
    engine, other = AutogradEngine([model], [train_cfg]), AutogradEngine([twin], [train_cfg])
    g = np.random.default_rng(0)
    batches = [(g.integers(0, 40, (1, 16, 5)), g.integers(0, 40, (1, 16))) for _ in range(3)]
    engine.step(*batches[0], np.array([0.01]))
    state = engine.member_state(0)
    assert "optim.exp_avg_sq.E_hash" in state and "optim.exp_avg.W1" in state
    twin.load_state_dict(model.state_dict())
    other.load_member_state(0, state)
    for idx, y in batches[1:]:
        engine.step(idx, y, np.array([0.01]))
        other.step(idx, y, np.array([0.01]))
    for (n, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


def test_settings_are_checked_and_unsupported_paths_say_so(monkeypatch):
    with pytest.raises(UserError, match="hash-orders"):
        make_configs("lecture", vocab_size=40, block_size=3, hash_orders=4)
    with pytest.raises(UserError, match="hash-orders"):
        make_configs("lecture", vocab_size=40, hash_orders=1)
    model_cfg, train_cfg = make_configs("lecture", vocab_size=40, hash_orders=3, engine="auto")
    assert "hash" in unsupported_reason(model_cfg, train_cfg)
    assert make_engine([MLP(model_cfg)], [train_cfg]).name == "autograd"
    with pytest.raises(UserError, match="hash"):
        make_engine([MLP(model_cfg)], [replace(train_cfg, engine="fused")])
    engine = make_engine([MLP(model_cfg)], [train_cfg])
    monkeypatch.setattr(distributed, "_world", object())
    with pytest.raises(UserError, match="hashed"):
        distributed.attach(engine)


def test_a_run_with_them_learns_saves_samples_and_exports_to_onnx_not_html(tmp_path):
    path = tmp_path / "scripts.txt"
    path.write_text("\n".join(many_script_words(3000)) + "\n", encoding="utf-8")
    corpus = load_corpus(path)
    V = corpus.vocab.size
    settings = dict(hidden=32, emb_dim=8, block_size=4, layers=1, dropout=0.0, softmax="adaptive", softmax_head=16,
                    steps=300, batch_size=64, lr=1e-2, schedule="constant", eval_interval=300, eval_examples=2000)
    plain = train(corpus, *make_configs("default", vocab_size=V, **settings), progress=False)
    model_cfg, train_cfg = make_configs("default", vocab_size=V, hash_orders=4, hash_bits=14, **settings)
    result = train(corpus, model_cfg, train_cfg, out=tmp_path / "run", progress=False)
    assert result.status == "completed" and result.summary["engine"] == "autograd"
    # the table remembers contexts the 32 units cannot: the training loss falls further
    assert result.summary["train_loss"] < plain.summary["train_loss"] - 0.05
    run = load_run(tmp_path / "run")
    dev = corpus.encoded("dev")
    assert split_nll(model_predictor(run.model), dev) == pytest.approx(result.summary["dev_loss"], rel=1e-6)
    assert len(sample(model_predictor(run.model), run.vocab, 5, seed=0)) == 5
    with pytest.raises(UserError, match="hashed context features"):
        export.export(tmp_path / "run", None, tmp_path / "m.html")
    if importlib.util.find_spec("onnxruntime") is None:
        return
    # ONNX computes the hashes too (int64 products that wrap around, arithmetic shifts): the
    # export checks its log-probabilities against the model's, and here they would differ
    # without the table's term
    info = export.export(tmp_path / "run", None, tmp_path / "m.onnx")
    assert info["checked_contexts"] > 100 and info["max_abs_diff"] <= export.ONNX_TOLERANCE
    X = torch.from_numpy(export.check_contexts(run))
    with torch.no_grad():
        expected = model_predictor(run.model)(X)
        run.model.E_hash.zero_()
        without = model_predictor(run.model)(X)
    assert (expected - without).abs().max() > 100 * export.ONNX_TOLERANCE


def test_row_adam_is_torch_sparse_adam():
    from makemore.optimizers.adamw import RowAdam

    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 4, generator=g, dtype=torch.float64)
    ours, theirs = table.clone().requires_grad_(), table.clone().requires_grad_()
    opts = [RowAdam([ours], lr=0.05, betas=(0.8, 0.95)), torch.optim.SparseAdam([theirs], lr=0.05, betas=(0.8, 0.95))]
    for _ in range(5):
        rows = torch.randint(0, 50, (12, 3), generator=g)  # repeated rows: the gradient sums them
        target = torch.randn(12, 4, generator=g, dtype=torch.float64)
        for p, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            ((torch.nn.functional.embedding_bag(rows, p, mode="sum", sparse=True) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours, theirs)
    assert not torch.equal(ours, table)
