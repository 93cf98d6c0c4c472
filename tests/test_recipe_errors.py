"""Ten kinds of bad recipe: each gives one clear line naming the field, exit status 2, nothing written."""

import pytest
import yaml

from conftest import run_cli, tiny_recipe
from hftoolkit.cli import main


def write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def edit(tmp_path, mutate):
    """The tiny recipe with one change applied to its parsed YAML."""
    path = tiny_recipe(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    mutate(recipe)
    path.write_text(yaml.safe_dump(recipe))
    return path


def _csv(tmp_path):
    data = tmp_path / "notes.csv"
    data.write_text("title,body\nbrakes,Pads wear down.\nengine,Oil matters.\n")
    return data


BAD_RECIPES = {
    "malformed yaml": (lambda t: write(t, "model:\n  name: [unclosed\n"), "not valid YAML"),
    "unknown top-level key": (lambda t: edit(t, lambda r: r.update(trainng={"epochs": 1})),
                              "did you mean 'training'"),
    "unknown nested key": (lambda t: edit(t, lambda r: r["training"].update(learning_rat=0.1)),
                           "did you mean 'learning_rate'"),
    "wrong type": (lambda t: edit(t, lambda r: r["training"].update(batch_size="eight")),
                   "training.batch_size: expected int"),
    "bad choice": (lambda t: edit(t, lambda r: r["data"].update(format="txt")), "data.format"),
    "missing data file": (lambda t: edit(t, lambda r: r["data"].update(train=str(t / "nope.txt"))),
                          "does not exist"),
    "missing column": (lambda t: edit(t, lambda r: r["data"].update(train=str(_csv(t)), validation=None)),
                       "column 'text' is not in"),
    "unknown model": (lambda t: edit(t, lambda r: r["model"].update(from_scratch=None, name="gpt-9000")),
                      "model.name: 'gpt-9000'"),
    "negative number": (lambda t: edit(t, lambda r: r["preprocess"].update(block_size=-5)),
                        "preprocess.block_size: -5 must be greater than 0"),
    "not a mapping": (lambda t: write(t, "- just\n- a list\n"), "must be a YAML mapping"),
    "zero beams": (lambda t: edit(t, lambda r: r["output"].update(num_beams=0)),
                   "output.num_beams: 0 must be greater than 0"),
    "beams without a merged model": (
        lambda t: edit(t, lambda r: (r["model"].update(from_scratch=None, name="smollm2-135m-instruct"),
                                     r["training"].update(lora={"enabled": True, "save_merged": False}),
                                     r["output"].update(num_beams=4))),
        "set training.lora.save_merged: true or output.num_beams: 1"),
}


@pytest.mark.parametrize("kind", list(BAD_RECIPES))
def test_bad_recipe_gives_one_line_and_exit_2(kind, tmp_path, capsys):
    make, expected = BAD_RECIPES[kind]
    recipe = make(tmp_path)
    out_dir = tmp_path / "out"
    assert main(["train", str(recipe), "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hftoolkit: error:") and expected in err, err
    assert not out_dir.exists()


def test_bad_override_and_unknown_bundled_name(tmp_path, capsys):
    assert main(["train", str(tiny_recipe(tmp_path)), "training.epochs"]) == 2  # no '=' → argparse-free path
    assert main(["train", "gpt_from_scrach"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'gpt_from_scratch'" in err


def test_override_type_checked(tmp_path, capsys):
    assert main(["train", str(tiny_recipe(tmp_path)), "training.epochs=lots"]) == 2
    assert "training.epochs: expected float" in capsys.readouterr().err


def test_real_process_exit_status_is_2(tmp_path):
    done = run_cli("train", write(tmp_path, "trainig: {}\n"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hftoolkit: error: unknown key 'trainig' (did you mean 'training'?); valid keys in recipe: "
        "description, model, data, preprocess, training, output"]
