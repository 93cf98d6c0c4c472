"""Every notebook runs top to bottom in a real Jupyter kernel."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTOOLKIT_NOTEBOOK_OUT", str(tmp_path / "run"))
    monkeypatch.setenv("HFTOOLKIT_NOTEBOOK_EPOCHS", "4")
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "eval_perplexity" in outputs and "cached: True" in outputs
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_there_is_a_notebook():
    assert NOTEBOOKS
