"""notebooks/mlp.ipynb: it is what notebooks/make_notebook.py generates, and it runs.

The run uses nbclient with the `python3` kernel of this interpreter (the venv's), in a
temporary working directory, with MAKEMORE_NOTEBOOK_STEPS=200 so that every training in it
is short.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import load_file

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "mlp.ipynb"
STEPS = 200
TIMEOUT = 120  # seconds per cell; the whole notebook takes 10-25 s at STEPS=200


def load_generator():
    return load_file("notebooks/make_notebook.py")


def test_committed_notebook_is_generated():
    text = load_generator().render()
    assert NOTEBOOK.read_text(encoding="utf-8") == text, (
        "notebooks/mlp.ipynb differs from what notebooks/make_notebook.py generates: "
        "run python notebooks/make_notebook.py")
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None  # committed without outputs


def _same_python(argv0: str) -> bool:
    # jupyter_client starts a kernelspec whose argv[0] is a bare `python` with sys.executable
    if argv0 in ("python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])):
        return True
    found = shutil.which(argv0) or argv0
    return os.path.abspath(found) == os.path.abspath(sys.executable)


def kernel_manager(tmp_path: Path):
    """A kernel manager for `python3` that starts this interpreter. The installed `python3`
    kernelspec is used when it does; otherwise one pointing at sys.executable is written to a
    temporary folder and used instead."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec("python3")
        if _same_python(spec.argv[0]):
            return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    except Exception:  # no such kernelspec: write our own below
        pass
    kernel_dir = tmp_path / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this venv)", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    assert ksm.get_kernel_spec("python3").argv[0] == sys.executable
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebook_runs(names_path, tmp_path, monkeypatch):
    # the kernel inherits this environment; the data dir must survive the change of directory
    monkeypatch.setenv("MAKEMORE_DATA_DIR", str(names_path.parent.resolve()))
    monkeypatch.setenv("MAKEMORE_NOTEBOOK_STEPS", str(STEPS))
    # One torch thread: these models are tiny, and on a busy machine two OpenMP threads
    # waiting on each other made the notebook 3x slower (sampling 200x) than one.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # one more cell, in this copy only: which interpreter did the kernel run?
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL-PREFIX', sys.prefix)"))
    client = nbclient.NotebookClient(nb, km=kernel_manager(tmp_path), timeout=TIMEOUT,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(_text(c.outputs) for c in nb.cells if c.cell_type == "code")
    assert f"KERNEL-PREFIX {sys.prefix}" in text
    assert f"steps capped at {STEPS}" in text
    # the lecture's data and model
    assert "32033 words" in text
    assert "'train': 182441, 'dev': 22902, 'test': 22803" in text
    assert "emma" in text and "... ---> e" in text
    assert "same row: True" in text and "same as one-hot @ C: True" in text
    assert "11897 parameters; count_params(config) = 11897" in text
    assert "logits (32, 27)" in text and "by hand == model(xb): True" in text
    # the hand-written loss overflows where F.cross_entropy does not
    assert "by hand, logits + 100:          nan" in text
    assert "unchanged by the shift: True" in text
    assert f"'steps': {STEPS}" in text and "suggested lr" in text
    assert "hidden=100" in text and "hidden=300" in text
    assert "3481 parameters" in text
    assert "same seed, same names: True" in text
    assert "Kneser-Ney, 3 characters of context: dev 2.06" in text
    assert "modified Kneser-Ney, 3 characters: dev 2.05" in text
    # every picture was drawn and shown: loss, lr-find, sweep, embeddings
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4
    assert not list(workdir.iterdir())  # the notebook wrote nothing into its working directory
