"""Every notebook runs top to bottom in a real Jupyter kernel with short parameters, and the values it computed
are checked (the notebooks write them to a small JSON file when RESULTS is set)."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, run_cli, tiny_recipe
from hub_server import LocalHub

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def run_notebook(name: str, folder: Path, **parameters) -> dict:
    """Execute notebooks/NAME with `parameters` injected after its parameters cell (as papermill does)."""
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    results = folder / f"{Path(name).stem}.json"
    parameters["RESULTS"] = str(results)
    at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(at + 1, injected)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    return json.loads(results.read_text())


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.relative_to(folder).parts[0] not in ("checkpoints", ".cache") and p.name != ".hftoolkit_push.json"}


def greedy_text(folder: Path) -> str:
    """The notebook's greedy continuation, computed here in plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer("The brake fluid", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def test_committed_notebooks_are_clean_and_use_the_public_api():
    assert [p.name for p in NOTEBOOKS] == ["01_finetune_on_your_documents.ipynb", "02_answer_questions.ipynb",
                                           "03_classify_car_issues.ipynb", "04_share_a_model.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name}: commit it without outputs"
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, path.name
        source = "\n".join(c.source for c in code)
        assert not re.search(r"subprocess|os\.system|^\s*!", source, re.M), f"{path.name}: use the API, not the CLI"
        assert not re.search(r"from hftoolkit[\w.]* import _|hftoolkit(\.\w+)*\._", source), path.name


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Notebook 01, short: real SmolLM2, 2 training steps, 8 held-out questions."""
    folder = tmp_path_factory.mktemp("nb01")
    results = run_notebook("01_finetune_on_your_documents.ipynb", folder, OUT=str(folder / "cars_qa"),
                           INDEX=str(folder / "index"), MAX_STEPS=2, HELDOUT_QUESTIONS=8)
    return folder / "cars_qa", results


@pytest.mark.slow
def test_01_finetune_beats_the_base_model_on_held_out_questions(finetuned):
    checkpoint, results = finetuned
    assert results["questions"] == 8 and results["train_steps"] == 2
    assert results["tuned_accuracy"] > results["base_accuracy"]
    assert Path(results["loss_curve"]).stat().st_size > 1000
    assert json.loads((checkpoint / "retrieval.json").read_text())  # answers from its index by default


@pytest.mark.slow
def test_02_answers_stream_sources_and_cache(finetuned, tmp_path):
    checkpoint, _ = finetuned
    results = run_notebook("02_answer_questions.ipynb", tmp_path, CHECKPOINT=str(checkpoint))
    assert results["cached"] and results["again"] == results["first"] and results["first"].strip()
    assert results["cached_seconds"] < results["first_seconds"] / 10
    # the same question through the command line, uncached, answers what the notebook got
    cli = run_cli("generate", checkpoint, results["question"], "--chat", "--json", "--cache", "off")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout)["completion"].strip() == results["first"].strip()
    assert results["answer"].strip()
    corpus = {p.name for p in (REPO / "hftoolkit/corpora/cars/text/train").iterdir()}
    assert results["sources"] and all(s["file"] in corpus and s["end"] > s["start"] for s in results["sources"])


@pytest.mark.slow
def test_03_confusion_matrix_covers_every_test_text(tmp_path):
    results = run_notebook("03_classify_car_issues.ipynb", tmp_path, OUT=str(tmp_path / "clf"), MAX_STEPS=40)
    test_texts = sum(1 for line in (REPO / "hftoolkit/corpora/cars/issues/test.jsonl").read_text().splitlines()
                     if line.strip())
    assert results["test_texts"] == test_texts == results["confusion_total"]
    assert results["confusion_accuracy"] == pytest.approx(results["eval_accuracy"], abs=1e-6)
    assert results["eval_accuracy"] > 0.3  # 7 classes; the majority class is 0.158
    assert len(results["per_class_f1"]) == 7 and all(0 <= f <= 1 for f in results["per_class_f1"].values())


def test_04_pushed_and_pulled_files_are_identical(tmp_path, monkeypatch):
    done = run_cli("train", tiny_recipe(tmp_path, training={"max_steps": 4}))
    assert done.returncode == 0, done.stderr[-2000:]
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # the kernel inherits these
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        results = run_notebook("04_share_a_model.ipynb", tmp_path, CHECKPOINT=str(tmp_path / "run"),
                               REPO_ID="tester/nb-share")
        from huggingface_hub import HfApi

        assert HfApi(endpoint=hub.endpoint).model_info("tester/nb-share").sha == results["commit"]
    local, download = tmp_path / "run", Path(results["download"])
    assert files_of(download) == files_of(local) and len(files_of(local)) == results["files"] >= 8
    assert greedy_text(download) == greedy_text(local) == results["from_hub"] == results["local"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert results["card_metrics"]["loss"] == metrics["eval_loss"]
