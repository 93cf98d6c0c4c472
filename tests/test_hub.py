"""Push to a hub and pull back, against a local server that speaks the Hub's HTTP API (tests/hub_server.py),
with the real huggingface_hub client. Every command's output is checked for the token."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from conftest import run_cli, tiny_recipe
from hub_server import LocalHub

WRONG_TOKEN = "hf_wrongTokenZZZZ9876543210"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_gpt):
    """Two tiny GPT checkpoints: v1 (the session's) and v2 (another seed)."""
    folder = tmp_path_factory.mktemp("v2")
    done = run_cli("train", tiny_recipe(folder, training={"max_steps": 6, "seed": 2},
                                          output={"keep_training_state": True}))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"v1": tiny_gpt, "v2": folder / "run"}


def hub_cli(hub, *args, token=None, home=None):
    """`hftoolkit ...` with the hub's endpoint and a token in the environment; the token must not leak."""
    secret = token or hub.token
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": secret, "HF_HUB_DISABLE_TELEMETRY": "1"}
    if home:
        env["HF_HOME"] = str(home)
    done = run_cli(*args, env=env)
    assert secret not in done.stdout and secret not in done.stderr
    return done


def files_of(folder, skip=("checkpoints",)) -> dict:
    """The checkpoint's files; the hub's copy also holds the push record (what hftoolkit sent), left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip and ".cache" not in p.parts
            and p.name != ".hftoolkit_push.json"}


def greedy(folder, prompt="The brake pads") -> list[int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0].tolist()


def test_push_then_snapshot_download_gives_identical_files_and_outputs(hub, checkpoints, tmp_path):
    local = checkpoints["v1"]
    done = hub_cli(hub, "push", local, "tester/tiny-gpt", "--commit-message", "first model", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    commit = HfApi(endpoint=hub.endpoint).model_info("tester/tiny-gpt").sha
    assert done.stdout.strip().startswith(f"pushed {len(files_of(local))} files of {local} to tester/tiny-gpt@main: "
                                          f"commit {commit}")

    downloaded = snapshot_download("tester/tiny-gpt", endpoint=hub.endpoint, local_dir=tmp_path / "dl", token=False)
    remote = files_of(tmp_path / "dl")
    assert remote == files_of(local)  # same names, same bytes; no resumable Trainer state
    assert "checkpoints" not in {name.split("/")[0] for name in remote}
    assert greedy(downloaded) == greedy(local)

    card = ModelCard.load(tmp_path / "dl" / "README.md")
    metrics = json.loads((local / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["loss"] == metrics["eval_loss"] and results["perplexity"] == metrics["eval_perplexity"]
    assert f"| eval_loss | {metrics['eval_loss']:.4f} |" in card.text  # the rendered metrics table
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"


def test_branch_push_and_pinned_pulls(hub, checkpoints, tmp_path):
    api = HfApi(endpoint=hub.endpoint)
    first = hub_cli(hub, "push", checkpoints["v1"], "tester/branching", home=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    main_commit = api.model_info("tester/branching").sha
    # a new branch starts from main: --prune drops v1's files there, so dev holds v2 alone
    second = hub_cli(hub, "push", checkpoints["v2"], "tester/branching", "--revision", "dev",
                     "--include-training-state", "--prune", home=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    dev_commit = api.model_info("tester/branching", revision="dev").sha
    assert dev_commit != main_commit and api.model_info("tester/branching").sha == main_commit
    dev_files = api.list_repo_files("tester/branching", revision="dev")
    assert "checkpoints/checkpoint-6/optimizer.pt" in dev_files  # --include-training-state
    assert not [f for f in api.list_repo_files("tester/branching") if f.startswith("checkpoints/")]

    for revision, expected, commit in (("dev", "v2", dev_commit), (main_commit, "v1", main_commit)):
        dest = tmp_path / f"pulled-{expected}"
        pulled = hub_cli(hub, "pull", "tester/branching", dest, "--revision", revision, home=tmp_path)
        assert pulled.returncode == 0, pulled.stderr[-2000:]
        assert pulled.stdout.strip() == f"pulled tester/branching@{revision} (commit {commit}) into {dest}"
        record = json.loads((dest / "pulled_from.json").read_text())
        assert record == {"repo_id": "tester/branching", "revision": revision, "commit": commit,
                          "endpoint": hub.endpoint}
        skip = () if expected == "v2" else ("checkpoints",)  # only the dev push carried the training state
        unpickled = {k: v for k, v in files_of(checkpoints[expected], skip).items()
                     if not k.endswith((".pt", ".pth", ".bin"))  # pull never fetches pickle files
                     and not k.startswith("checkpoints/.hftoolkit")}  # the run's own records stay local
        assert {k: v for k, v in files_of(dest, skip).items() if k != "pulled_from.json"} == unpickled
        assert greedy(dest) == greedy(checkpoints[expected])
    again = hub_cli(hub, "pull", "tester/branching", tmp_path / "pulled-v1", home=tmp_path)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr  # never overwrites


def test_wrong_token_is_refused_in_one_line(hub, checkpoints, tmp_path):
    done = hub_cli(hub, "push", checkpoints["v1"], "tester/not-made", token=WRONG_TOKEN, home=tmp_path)
    assert done.returncode == 2 and done.stdout == ""  # nothing reported as pushed
    assert done.stderr.strip() == (f"hftoolkit: error: push: {hub.endpoint} rejected the token (401 unauthorized); "
                                   "log in again with `hf auth login` or set HF_TOKEN to a valid token")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=hub.token).model_info("tester/not-made")


def test_pickle_only_repo_is_refused(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("tester/pickled")
    api.upload_file(path_or_fileobj=b'{"model_type": "gpt2"}', path_in_repo="config.json", repo_id="tester/pickled")
    api.upload_file(path_or_fileobj=b"\x80\x04 not really a pickle", path_in_repo="pytorch_model.bin",
                    repo_id="tester/pickled")
    done = hub_cli(hub, "pull", "tester/pickled", tmp_path / "p", home=tmp_path)
    assert done.returncode == 2 and "only pickle files: pytorch_model.bin" in done.stderr
    assert not (tmp_path / "p").exists()
    missing = hub_cli(hub, "pull", "tester/nothing-here", tmp_path / "q", home=tmp_path)
    assert missing.returncode == 2 and "repository tester/nothing-here not found" in missing.stderr


def test_push_never_deletes_what_it_did_not_send_and_prune_removes_only_its_own(hub, checkpoints, tmp_path):
    """A colleague's files on the hub survive every push; --prune deletes only a file an earlier hftoolkit push
    sent, after naming it. (Before: upload_folder(delete_patterns=["*"]) deleted the colleague's files.)"""
    import shutil

    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    older = tmp_path / "older"
    shutil.copytree(checkpoints["v1"], older, ignore=shutil.ignore_patterns("checkpoints"))
    (older / "extra_eval.json").write_text('{"ours": true}')  # a file only the older push sends
    first = hub_cli(hub, "push", older, "tester/shared", home=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    api.upload_file(path_or_fileobj=b"# colleague's notes", path_in_repo="NOTES.md", repo_id="tester/shared")
    api.upload_file(path_or_fileobj=b"GGUF-bytes", path_in_repo="gguf/model.gguf", repo_id="tester/shared")

    plain = hub_cli(hub, "push", checkpoints["v1"], "tester/shared", home=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    after = set(api.list_repo_files("tester/shared"))
    assert {"NOTES.md", "gguf/model.gguf", "extra_eval.json"} <= after
    assert plain.stderr.strip() == ("push: 1 files from an earlier hftoolkit push are not in run and stay on the "
                                    "hub (extra_eval.json); pass --prune to delete them")

    pruned = hub_cli(hub, "push", checkpoints["v1"], "tester/shared", "--prune", home=tmp_path)
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    assert "deleting 1 files an earlier hftoolkit push sent" in pruned.stderr and "extra_eval.json" in pruned.stderr
    remaining = set(api.list_repo_files("tester/shared"))
    assert remaining == after - {"extra_eval.json"}
    assert api.hf_hub_download("tester/shared", "NOTES.md", local_dir=tmp_path / "n") and \
        (tmp_path / "n" / "NOTES.md").read_bytes() == b"# colleague's notes"
    record = json.loads((tmp_path / "rec" / ".hftoolkit_push.json").read_text()) if api.hf_hub_download(
        "tester/shared", ".hftoolkit_push.json", local_dir=tmp_path / "rec") else None
    assert record["files"] == sorted(files_of(checkpoints["v1"]))  # the pruned file is no longer counted ours


def test_published_files_hold_no_local_path(hub, tiny_chat_model, brakes_tyres_index, tmp_path):
    """A LoRA run with retrieval, trained from a temporary folder with absolute paths everywhere, then pushed:
    no uploaded file names that folder, the home folder or this host (recipe.yaml, model card, retrieval.json,
    adapter_config.json, TensorBoard texts and file names). (Before: recipe.yaml, README.md and the TensorBoard
    arguments held the absolute paths; retrieval.json and adapter_config.json the index and base folders.)"""
    import shutil
    import socket

    import yaml

    shutil.copytree(brakes_tyres_index, tmp_path / "index")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"What is part {i}?", "answer": f"Part {i} is the caliper."})
                          + "\n" for i in range(8)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_chat_model)},
        "data": {"train": str(qa), "validation": str(qa), "format": "qa",
                 "retrieval": {"index": str(tmp_path / "index"), "top_k": 1, "context_tokens": 64,
                               "distractor_percent": 0}},
        "preprocess": {"block_size": 200},
        "training": {"max_steps": 2, "batch_size": 4, "precision": "fp32", "eval_steps": 2, "save_steps": 2,
                     "lora": {"enabled": True, "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}},
        "output": {"dir": str(tmp_path / "run"), "push_to": "tester/no-paths"}}))
    done = hub_cli(hub, "train", recipe, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-3000:]
    downloaded = tmp_path / "dl"
    snapshot_download("tester/no-paths", endpoint=hub.endpoint, local_dir=downloaded)
    published = [p for p in downloaded.rglob("*") if p.is_file() and ".cache" not in p.parts]
    names = {str(p.relative_to(downloaded)) for p in published}
    assert {"recipe.yaml", "README.md", "retrieval.json", "adapter/adapter_config.json"} <= names
    assert any(name.startswith("logs/events.out.tfevents.") for name in names)
    local = [str(tmp_path), str(tmp_path.resolve()), str(tiny_chat_model), str(brakes_tyres_index)]
    for path in published:
        text = path.read_bytes().decode("latin-1")
        assert not [folder for folder in local if folder in text], path
        if path.suffix in (".json", ".yaml", ".md", ".jinja") or "tfevents" in path.name:
            assert f"{Path.home()}/" not in text, path
    assert not [n for n in names if f".{socket.gethostname()}." in n]
    assert json.loads((downloaded / "retrieval.json").read_text())["index"] == "../index"
    assert yaml.safe_load((downloaded / "recipe.yaml").read_text())["data"]["train"] == "../qa.jsonl"


def test_recipe_pushes_when_training_ends(hub, tmp_path):
    recipe = tiny_recipe(tmp_path, output={"dir": str(tmp_path / "run"), "push_to": "tester/from-recipe",
                                           "license": "apache-2.0"})
    done = hub_cli(hub, "train", recipe, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    downloaded = snapshot_download("tester/from-recipe", endpoint=hub.endpoint, local_dir=tmp_path / "dl")
    assert files_of(tmp_path / "dl") == files_of(tmp_path / "run")
    assert ModelCard.load(f"{downloaded}/README.md").data.license == "apache-2.0"
