"""Build notebooks/mlp.ipynb: makemore part 2, walked through with the `makemore` package.

    python notebooks/make_notebook.py          # (re)write notebooks/mlp.ipynb, without outputs
    python notebooks/make_notebook.py --check  # exit 1 if the committed notebook has drifted

The notebook is generated, never edited by hand: tests/test_notebook.py checks that the
committed file equals `render()`, and executes it with MAKEMORE_NOTEBOOK_STEPS=200 so that
every training in it stays short. Cell ids are fixed so that the output is deterministic.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parent / "mlp.ipynb"


def md(text: str) -> tuple[str, str]:
    return "markdown", text


def code(text: str) -> tuple[str, str]:
    return "code", text


CELLS = [
    md("""
    # makemore part 2, walked through with the `makemore` package

    Andrej Karpathy's lecture "Building makemore Part 2: MLP" (Neural Networks: Zero to Hero,
    2022, <https://www.youtube.com/watch?v=TCH_1BHY58I>) builds the character-level language
    model of Bengio, Ducharme, Vincent & Jauvin, "A Neural Probabilistic Language Model", JMLR
    3 (2003). This notebook retraces the lecture's steps, but each step is a call into the
    `makemore` package instead of code typed afresh, so the numbers here are the numbers the
    command line reports.

    The model in one line: look up a learned vector for each of the last three characters,
    concatenate them, pass them through one tanh layer and read a distribution over the next
    character off a linear output layer.

    **Run time.** Left alone, every training below uses the lecture's full recipe (200,000
    steps for the main model), which takes minutes. Set the environment variable
    `MAKEMORE_NOTEBOOK_STEPS` (e.g. to 200) to cap every training at that many steps: the
    test suite does this, so the losses it prints are those of barely trained models.
    """),
    code("""
    import math
    import os
    import tempfile
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from IPython.display import Image, display

    import makemore as mm
    from makemore import baselines, experiments, mixture, plots, rundir

    # MAKEMORE_NOTEBOOK_STEPS caps every training (and the lr range test) at that many steps.
    STEPS = int(os.environ.get("MAKEMORE_NOTEBOOK_STEPS") or 0) or None


    def capped(steps: int) -> int:
        return min(steps, STEPS) if STEPS else steps


    # Runs and pictures go to a temporary folder, removed when the kernel exits.
    _workdir = tempfile.TemporaryDirectory(prefix="makemore-notebook-")
    WORK = Path(_workdir.name)
    print("steps capped at", STEPS if STEPS else "nothing (the lecture's full recipe)")
    """),
    md("""
    ## 1. Data: words, a vocabulary, context windows, a split

    `mm.load_corpus("names")` finds `names.txt` (in `$MAKEMORE_DATA_DIR`, the cache, or the
    web), reads one name per line, builds the vocabulary with the boundary token `.` at
    index 0, and splits the words 80/10/10 into train, dev and test.
    """),
    code("""
    corpus = mm.load_corpus("names")
    vocab = corpus.vocab
    print(len(corpus.words), "words, e.g.", corpus.words[:8])
    print("vocabulary of", vocab.size, "characters:", repr(vocab.chars))
    """),
    md("""
    Each word gives one training example per character plus one for its end: the
    `block_size` characters before it (the start is padded with `.`) and the character that
    comes next. Here are the examples of the first word with three characters of context:
    """),
    code("""
    block_size = 3
    X, Y = mm.build_examples(corpus.words[:1], vocab, block_size)
    for context, target in zip(X.tolist(), Y.tolist()):
        print(vocab.decode(context), "--->", vocab.decode([target]))
    print("X", tuple(X.shape), X.dtype, "  Y", tuple(Y.shape), Y.dtype)
    """),
    md("""
    The split shuffles the words with `random.Random(42)` and cuts them at 80% and 90%. It
    lands on the lecture's own split: 182,441 / 22,902 / 22,803 examples. (The published
    notebook had run its shuffle cell several times; `makemore.data.split_words` repeats
    that, see `LECTURE_SHUFFLES`, so the figures here compare with the lecture's.)
    """),
    code("""
    stats = corpus.stats(block_size)
    print("words per split:   ", stats["split_words"])
    print("examples per split:", stats["examples"])
    Xtr, Ytr = corpus.examples("train", block_size)
    Xdev, Ydev = corpus.examples("dev", block_size)
    print("train", tuple(Xtr.shape), " dev", tuple(Xdev.shape))
    """),
    md("""
    ## 2. The embedding lookup is a matrix product

    The first layer is a table `C` with one row per character. Indexing `C[ix]` picks a row;
    so does multiplying the one-hot vector of `ix` by `C`, because all but one of its entries
    are zero. The lookup is the same linear layer, without building the one-hot vectors, and
    it works on whole tensors of indices at once.
    """),
    code("""
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab.size, 2), generator=g)
    ix = vocab.stoi["e"]
    one_hot = F.one_hot(torch.tensor(ix), num_classes=vocab.size).float()
    print("one_hot @ C:", one_hot @ C, "  C[ix]:", C[ix])
    print("same row:", torch.allclose(one_hot @ C, C[ix]))

    batch = Xtr[:32]
    emb_by_matmul = F.one_hot(batch, num_classes=vocab.size).float() @ C
    print("a batch of contexts", tuple(batch.shape), "-> embeddings", tuple(C[batch].shape),
          "| same as one-hot @ C:", torch.allclose(emb_by_matmul, C[batch]))
    """),
    md("""
    ## 3. The forward pass, shape by shape

    `mm.MLP` keeps the lecture's tensors under the lecture's names: `C`, then `W1`, `b1` for
    the tanh layer, then `W_out`, `b_out` for the logits (the lecture's `W2`, `b2`). The
    `lecture` preset is the configuration at the end of the video: 3 characters of context,
    10-dimensional embeddings, 200 hidden units, every tensor drawn from `torch.randn`.
    Below, the forward pass is written out by hand on those tensors and checked against the
    model's own.
    """),
    code("""
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=vocab.size)
    model = mm.MLP(model_cfg, seed=2147483647)
    for name, p in model.named_parameters():
        print(f"{name:6s}{tuple(p.shape)}")
    print(model.num_params(), "parameters; count_params(config) =", mm.count_params(model_cfg))
    """),
    code("""
    xb, yb = Xtr[:32], Ytr[:32]
    emb = model.C[xb]                           # (32, 3, 10): one vector per context character
    x = emb.view(emb.shape[0], -1)              # (32, 30): concatenated, a view, no copy
    h = torch.tanh(x @ model.W1 + model.b1)     # (32, 200)
    logits = h @ model.W_out + model.b_out      # (32, 27): one score per possible next character
    for name, t in (("emb", emb), ("x", x), ("h", h), ("logits", logits)):
        print(f"{name:7s}{tuple(t.shape)}")
    model_logits, model_loss = model(xb, yb)
    print("by hand == model(xb):", torch.allclose(logits, model_logits))
    """),
    md("""
    ## 4. The loss, and why `F.cross_entropy`

    The loss is the mean negative log-probability of the correct next character. By hand:
    exponentiate the logits into counts, normalise the counts into probabilities, pick the
    target's probability, take `-log`. `F.cross_entropy` returns the same number.
    """),
    code("""
    counts = logits.exp()
    prob = counts / counts.sum(1, keepdim=True)
    manual = -prob[torch.arange(len(yb)), yb].log().mean()
    print(f"by hand {manual.item():.4f}   F.cross_entropy {F.cross_entropy(logits, yb).item():.4f}")
    print(f"a uniform guess would cost log({vocab.size}) = {math.log(vocab.size):.4f}")
    """),
    md("""
    The loss is far above the uniform guess's: with plain `torch.randn` weights the untrained
    network is confidently wrong (the `scaled` init, from makemore part 3, starts close to the
    uniform guess instead). The library call is not only shorter. Softmax does not change when the same
    number is added to every logit, but the hand-written version does: `exp` of a logit above
    about 88 is already infinite in float32, and inf / inf is NaN. `F.cross_entropy` subtracts
    the largest logit first, so a shift of 100 leaves it unchanged. It also does the work in
    fewer kernels, with fewer intermediate tensors and a simpler backward pass.
    """),
    code("""
    shifted = logits + 100
    counts = shifted.exp()
    prob = counts / counts.sum(1, keepdim=True)
    manual_shifted = -prob[torch.arange(len(yb)), yb].log().mean()
    print("largest count after the shift:", counts.max().item())
    print("by hand, logits + 100:         ", manual_shifted.item())
    print("F.cross_entropy, logits + 100: ", F.cross_entropy(shifted, yb).item())
    print("unchanged by the shift:", torch.allclose(F.cross_entropy(shifted, yb), F.cross_entropy(logits, yb)))
    """),
    md("""
    ## 5. Training

    `mm.train` is the lecture's loop: sample a minibatch of 32 training examples, forward,
    backward, update with learning rate 0.1, dropped to 0.01 for the second half. It
    evaluates the whole dev split about 20 times along the way, keeps the weights with the
    best dev loss, and reports train and dev loss over the whole of each split. With
    `out=...` it keeps a run directory (config, vocabulary, checkpoints, `metrics.csv`) that
    the `makemore` command line can read back. (The update is computed by a hand-written
    fused backward pass when the options allow it; `engine="autograd"` is the plain
    `loss.backward()`.)
    """),
    code("""
    model_cfg, train_cfg = mm.make_configs("lecture", vocab_size=vocab.size, steps=capped(200_000))
    result = mm.train(corpus, model_cfg, train_cfg, out=WORK / "lecture", progress=False)
    print({k: result.summary[k] for k in ("params", "steps", "best_step", "train_loss", "dev_loss",
                                          "seconds", "engine", "status")})
    """),
    code("""
    png = plots.plot_loss(rundir.read_metrics(WORK / "lecture" / "metrics.csv"), WORK / "lecture" / "loss.png",
                          f"lecture preset: loss during training ({result.summary['params']:,} parameters)")
    display(Image(filename=str(png)))
    """),
    md("""
    ## 6. Finding a learning rate

    The lecture picks its learning rate with a range test: a fresh model takes one minibatch
    step at each of 1,000 rates rising exponentially from 0.001 to 1, and the loss is
    recorded at each. While the rate is too small the loss barely moves; past a good rate it
    becomes unstable and climbs. `experiments.lr_find` runs this test, smooths the curve and
    suggests half the rate at its minimum (a margin below the edge of stability).
    """),
    code("""
    lr_result = experiments.lr_find(corpus, model_cfg, train_cfg, lr_min=1e-3, lr_max=1.0,
                                    steps=capped(1000))
    print(f"suggested lr {lr_result.suggested_lr:.3g}: {lr_result.rule}")
    png = plots.plot_lr_find(lr_result.rows, lr_result.suggested_lr, WORK / "lr_find.png",
                             f"learning-rate range test, {len(lr_result.rows):,} steps, lecture preset")
    display(Image(filename=str(png)))
    """),
    md("""
    ## 7. Train, dev, test: how to tell over-fitting

    A loss on the training examples alone says little: a big enough network memorises them.
    The dev split is for choosing settings (size, rate, steps) and the test split is kept for
    a last, honest figure. When train and dev loss are close, as here, the network is not
    over-fitting: it is too small or too briefly trained, and may gain from more capacity.
    """),
    code("""
    s = result.summary
    print(f"train {s['train_loss']:.4f}   dev {s['dev_loss']:.4f}   gap {s['dev_loss'] - s['train_loss']:+.4f}")
    """),
    md("""
    Over-fitting on purpose, as the lecture does first: train the same network on the
    32 examples of the first five names only. With 11,897 parameters for 32 examples the
    training loss falls towards zero (not to zero: after `...` the first letter is `e`, `o`,
    `a`, `i` or `s`, and no model can know which), while the loss on the real dev names stays
    far higher. The evaluation history shows the two drift apart. (`mm.train` returns the
    weights with the best dev loss, so its summary hides some of this; the history does not.)
    """),
    code("""
    five = corpus.words[:5]
    tiny = mm.Corpus("the first five names", corpus.words, vocab,
                     {"train": five, "dev": corpus.splits["dev"], "test": corpus.splits["test"]})
    print(five, "->", tuple(tiny.examples("train", block_size)[0].shape), "training examples")
    _, overfit_cfg = mm.make_configs("lecture", vocab_size=vocab.size, steps=capped(1000))
    overfit = mm.train(tiny, model_cfg, overfit_cfg, progress=False)
    shown = sorted(set(range(0, len(overfit.history), 4)) | {len(overfit.history) - 1})
    for row in (overfit.history[i] for i in shown):
        train_loss = "   -  " if row["train_loss"] is None else f"{row['train_loss']:6.3f}"
        print(f"step {row['step']:5d}  minibatch train {train_loss}  dev {row['dev_loss']:6.3f}")
    """),
    md("""
    ## 8. Scaling the network

    The lecture then grows the network and watches whether dev loss follows. `experiments.sweep`
    trains each point of a grid as an ordinary run directory and tabulates them by dev loss;
    here two hidden-layer sizes with everything else from the `lecture` preset. In the figure,
    the length of each vertical line is the train-dev gap. More hidden units are no sure gain:
    in the lecture, widening the layer to 300 units did little while the characters were
    squeezed into 2-D embeddings, and a bigger layer also needs more steps (or a different
    learning rate) to be trained as far. Compare the two rows before concluding either way.
    """),
    code("""
    grid = {"hidden": [100, 300]}
    sweep = experiments.sweep(corpus, grid, WORK / "sweep", preset="lecture",
                              overrides={"steps": capped(200_000)})
    for row in sweep.table:
        print(f"{row['name']:11s} {row['params']:6,d} params  train {row['train_loss']:.4f}  "
              f"dev {row['dev_loss']:.4f}  gap {row['gap']:+.4f}")
    png = plots.plot_sweep(sweep.table, grid, WORK / "sweep" / "sweep.png", "hidden-layer size, lecture preset")
    display(Image(filename=str(png)))
    """),
    md("""
    ## 9. What the embeddings learn

    With two dimensions per character the table `C` can be drawn as it is. The `tiny2d`
    preset is the lecture's 2-D experiment (100 hidden units, 3,481 parameters). After full
    training the vowels gather in one corner and `.` and rare letters such as `q` sit apart:
    characters the network treats alike end up close. (With `MAKEMORE_NOTEBOOK_STEPS` set the
    picture is mostly the random start.) For wider tables, `experiments.embedding_projection`
    falls back to the first two principal components.
    """),
    code("""
    tiny_cfg, tiny_train_cfg = mm.make_configs("tiny2d", vocab_size=vocab.size, steps=capped(50_000))
    tiny2d = mm.train(corpus, tiny_cfg, tiny_train_cfg, progress=False)
    print(tiny2d.summary["params"], "parameters, dev", round(tiny2d.summary["dev_loss"], 4))
    C2 = tiny2d.model.C.detach().double().numpy()
    xy, _, _ = experiments.embedding_projection(C2)  # a 2-column C is drawn as it is
    png = plots.plot_embeddings(xy, vocab.chars, WORK / "embeddings.png", "tiny2d: the 2-D character embeddings C",
                                "C[:, 0]", "C[:, 1]")
    display(Image(filename=str(png)))
    neighbours = experiments.nearest_neighbours(C2, k=3)
    for c in ".aeiouq":
        print(c, "is nearest to", " ".join(vocab.chars[j] for j, _ in neighbours[vocab.stoi[c]]))
    """),
    md("""
    ## 10. Sampling

    To generate a name, start from the context `...`, draw the next character from the
    model's distribution, slide the window and repeat until `.` comes out. `mm.sample` works
    on a *predictor* (contexts to log-probabilities), which `mm.model_predictor` makes from a
    model; a seed makes the draw repeatable. Dividing the logits by a temperature below 1
    sharpens the distribution (safer, more common names), above 1 flattens it (stranger ones).
    """),
    code("""
    predictor = mm.model_predictor(result.model)
    print(mm.sample(predictor, vocab, n=10, seed=2147483647))
    print("same seed, same names:",
          mm.sample(predictor, vocab, n=10, seed=2147483647) == mm.sample(predictor, vocab, n=10, seed=2147483647))
    for temperature in (0.5, 1.0, 2.0):
        print(f"temperature {temperature}:", mm.sample(predictor, vocab, n=8, seed=1, temperature=temperature))
    """),
    md("""
    Are the samples new names or copies of the training set? `mm.sample_tagged` labels each
    with the first split it occurs in, or `new`; `mm.score` gives a word's loss per character.
    """),
    code("""
    tagged = mm.sample_tagged(predictor, vocab, corpus.splits, n=200, seed=3)
    tags = [t["tag"] for t in tagged]
    print({tag: tags.count(tag) for tag in ("train", "dev", "test", "new")})
    for r in mm.score(predictor, vocab, ["emma", "xqzt"]):
        print(f"{r['word']:6s} {r['nll_per_char']:.3f} nats per character")
    """),
    md("""
    ## 11. Count baselines: how good is the MLP?

    The lecture's starting point, the bigram model of makemore part 1, costs 2.454 nats per
    character. A fairer baseline for a network that reads three characters is a count model
    that reads three too: a 4-gram with interpolated Kneser-Ney smoothing (Chen & Goodman,
    1998), counted on the training split with its discount tuned on dev, or with their modified
    Kneser-Ney's three discounts (by how often an n-gram was seen). `makemore.baselines` fits
    them and scores them on exactly the dev examples the MLP is scored on, so the numbers compare
    directly. Trained fully, the lecture's MLP (dev about 2.17 in the video) does *not* beat
    this count model at the same context length: Bengio et al.'s network earns its keep at
    longer contexts and larger sizes, and when mixed with the counts.
    """),
    code("""
    print(f"add-one bigram (part 1, on all words): {baselines.add_one_bigram_nll(corpus.words):.4f}")
    kn = baselines.fit_on_dev(corpus, context=block_size)
    print(f"Kneser-Ney, {block_size} characters of context: dev {kn.nll(Xdev, Ydev):.4f} (discount {kn.smoothing:.3f})")
    mkn = baselines.fit_on_dev(corpus, context=block_size, method="modified_kneser_ney")
    discounts = ", ".join(f"{d:.3f}" for d in mkn.smoothing)
    print(f"modified Kneser-Ney, {block_size} characters: dev {mkn.nll(Xdev, Ydev):.4f} (discounts {discounts})")
    print(f"MLP, lecture preset ({result.summary['steps']:,} steps):  dev {result.summary['dev_loss']:.4f}")
    for row in baselines.ngram_table(corpus, max_context=5):
        print(f"context {row['context']}: add-alpha {row['add_alpha']['dev_loss']:.4f}  "
              f"Kneser-Ney {row['kneser_ney']['dev_loss']:.4f}  "
              f"modified {row['modified_kneser_ney']['dev_loss']:.4f}  "
              f"(dev contexts never seen in training: {row['unseen_dev_contexts']:.1%})")
    """),
    md("""
    Bengio et al. (2003, section 4) report their best results from averaging the network's
    probabilities with an n-gram model's. `mixture.fit_mixture` tunes the mixing weight on dev:
    """),
    code("""
    mixed, mix = mixture.fit_mixture(predictor, corpus.splits["train"], corpus.splits["dev"], vocab, context=5)
    print(f"MLP {mix['mlp_dev_loss']:.4f}  Kneser-Ney (5) {mix['ngram_dev_loss']:.4f}  "
          f"mixture {mix['mix_dev_loss']:.4f} with weight {mix['weight']:.3f} on the MLP")
    """),
    md("""
    ## References

    * Y. Bengio, R. Ducharme, P. Vincent, C. Jauvin. A Neural Probabilistic Language Model.
      JMLR 3:1137-1155, 2003.
    * A. Karpathy. Building makemore Part 2: MLP. Neural Networks: Zero to Hero, 2022.
      <https://www.youtube.com/watch?v=TCH_1BHY58I>; code and data:
      <https://github.com/karpathy/makemore>.
    * S. F. Chen, J. Goodman. An Empirical Study of Smoothing Techniques for Language
      Modeling. Harvard TR-10-98, 1998.
    """),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for i, (kind, text) in enumerate(CELLS):
        source = textwrap.dedent(text).strip("\n")
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{i:02d}"  # fixed ids: the same cells always give the same file
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def render() -> str:
    """The notebook file's exact text."""
    return nbformat.writes(build()) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not NOTEBOOK.is_file() or NOTEBOOK.read_text(encoding="utf-8") != text:
            print(f"{NOTEBOOK} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    NOTEBOOK.write_text(text, encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
