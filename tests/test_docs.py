"""Docs that cannot rot: the generated reference matches the schema and the parser, every `hftoolkit ...` command
in README.md and docs/ parses with the real parser (recipe keys in overrides included), every relative link
resolves, every Python block in the docs runs, and the site builds with `mkdocs build --strict`."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_recipe

from hftoolkit import cli
from hftoolkit.errors import UserError
from hftoolkit.recipe.load import apply_override, build, find_recipe, load_recipe
from hftoolkit.recipe.schema import Recipe

spec = importlib.util.spec_from_file_location("docs_reference", REPO / "scripts" / "docs_reference.py")
docs_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_reference)

GENERATED_CLI = REPO / "docs" / "reference" / "cli.md"


def doc_files() -> list[Path]:
    """The Markdown a reader meets: the front page, the project notes and every docs page (not benchmark output)."""
    pages = [REPO / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "ARCHITECTURE.md")]
    pages += sorted(p for p in (REPO / "docs").rglob("*.md") if "results" not in p.relative_to(REPO / "docs").parts)
    return pages


FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
SHELL_END = {"&&", "||", ";", "|", ">", ">>", "2>", "2>&1", "<", "&"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(text)]


def commands_in(path: Path) -> list[tuple[str, str]]:
    """Every `hftoolkit` line of a page, as ("command", line) for shell and console blocks (console: the `$ `
    lines) and ("mention", span) for inline code, which names a verb and its flags without being a whole command."""
    text = path.read_text(encoding="utf-8")
    found = []
    for lang, body in fenced_blocks(text):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            found.append(("command", line))
    if path != GENERATED_CLI:
        prose = FENCE.sub("", text)
        found += [("mention", span) for span in INLINE.findall(prose) if span.startswith("hftoolkit ")]
    return [(kind, line) for kind, line in found if re.search(r"(^|\s)hftoolkit\s", line)]


def hftoolkit_argv(line: str) -> list[list[str]]:
    """The arguments after each `hftoolkit` (or `-m hftoolkit`) in a shell line, up to a shell operator."""
    words = shlex.split(line, comments=True)
    found = []
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        starts_command = i == 0 or before in SHELL_END or before == "-m" or re.fullmatch(r"\w+=\S*", before)
        if word == "hftoolkit" and starts_command:
            rest = []
            for arg in words[i + 1:]:
                if arg in SHELL_END:
                    break
                rest.append(arg)
            found.append(rest)
    return found


def check_overrides(recipe: str, overrides: list[str]) -> str | None:
    """None when every `section.key=value` names a real key with a valid value (on the recipe when it exists)."""
    try:
        try:
            find_recipe(recipe)
        except UserError:  # a recipe of the reader's own (my_recipe.yaml): check the keys against the schema
            raw: dict = {}
            for item in overrides:
                apply_override(raw, item)
            build(Recipe, raw, prefix="")
        else:
            load_recipe(recipe, overrides)
    except UserError as exc:
        return f"recipe override: {exc}"
    return None


def check_command(argv: list[str]) -> str | None:
    """None when the real parser accepts `argv` and its recipe overrides name real keys; else why not."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = cli.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return None
        return f"exit {exc.code}: {err.getvalue().strip().splitlines()[-1] if err.getvalue() else ''}"
    overrides = getattr(args, "overrides", None)
    if overrides:
        return check_overrides(getattr(args, "recipe", None) or getattr(args, "name", None) or "cars_qa", overrides)
    return None


def check_mention(argv: list[str]) -> str | None:
    """An inline mention (`hftoolkit index build --out`): the verb exists and so does every flag named for it."""
    parser, words = cli.build_parser(), list(argv)
    while words:
        verbs = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if not verbs or words[0] not in verbs:
            break
        parser = verbs[words.pop(0)]
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) and argv[:1] != ["--version"]:
        return f"'{' '.join(argv[:len(argv) - len(words)]) or argv[0]}' is not a whole verb"
    flags = {flag for action in parser._actions for flag in action.option_strings}
    unknown = [word for word in words if word.startswith("-") and word.split("=")[0] not in flags]
    if unknown:
        return f"unknown flag(s) for this verb: {' '.join(unknown)}"
    overrides = [word for word in words if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+=.*", word)]
    return check_overrides(words[0] if words and "=" not in words[0] else "cars_qa", overrides) if overrides else None


def test_reference_pages_are_generated_from_the_schema_and_the_parser():
    stale = [str(path.relative_to(REPO)) for path, text in docs_reference.pages().items()
             if path.read_text(encoding="utf-8") != text]
    assert not stale, f"{stale} differ from the code: run `python scripts/docs_reference.py` and commit the pages"


def test_every_recipe_key_and_cli_flag_appears_in_the_reference():
    recipe_page = docs_reference.PAGES["recipe"].read_text(encoding="utf-8")
    missing = [name for name, _, _ in docs_reference.recipe_keys() if f"`{name}`" not in recipe_page]
    assert not missing, f"recipe keys missing from docs/reference/recipe.md: {missing}"
    assert len(docs_reference.recipe_keys()) > 60
    cli_page = GENERATED_CLI.read_text(encoding="utf-8")
    missing, undescribed = [], []
    for path, parser, _, _ in docs_reference.subcommands(cli.build_parser()):
        heading = re.search(rf"^#+ `{re.escape(path)}`$", cli_page, re.M)
        assert heading, f"`{path}` has no section in docs/reference/cli.md"
        section = cli_page[heading.end():].split("\n#")[0]
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            if not any(f"`{name}`" in section.split("\n## ")[0] for name in names):
                missing.append(f"{path} {names[0]}")
            if not action.help:
                undescribed.append(f"{path} {names[0]}")
    assert not missing, f"flags missing from docs/reference/cli.md: {missing}"
    assert not undescribed, f"arguments without a help line (the reference would say nothing): {undescribed}"


def test_every_documented_command_parses_with_the_real_parser():
    checked, broken = 0, []
    for page in doc_files():
        for kind, line in commands_in(page):
            for argv in hftoolkit_argv(line):
                checked += 1
                why = check_command(argv) if kind == "command" else check_mention(argv)
                if why:
                    broken.append(f"{page.relative_to(REPO)}: hftoolkit {shlex.join(argv)}\n    {why}")
    assert not broken, "documented commands the CLI rejects:\n" + "\n".join(broken)
    assert checked > 60, f"only {checked} commands found: is the extraction still working?"


OTHER_TOOLS_FLAGS = {"--bf16", "--machine_rank"}  # run_clm's and accelerate's, named where the docs use them


def all_flags() -> set[str]:
    flags = {flag for action in cli.build_parser()._actions for flag in action.option_strings}
    for _, parser, _, _ in docs_reference.subcommands(cli.build_parser()):
        flags |= {flag for action in parser._actions for flag in action.option_strings}
    return flags


def test_every_flag_named_in_the_prose_exists():
    """A flag written on its own in running text (`--context-tokens`) must be a flag of some verb."""
    flags, checked, broken = all_flags(), 0, []
    for page in doc_files():
        if page == GENERATED_CLI:
            continue
        prose = FENCE.sub("", page.read_text(encoding="utf-8"))
        for span in INLINE.findall(prose):
            word = re.match(r"--[a-z][a-z0-9_-]*", span)
            if word:
                word = word.group(0)
                checked += 1
                if word not in flags | OTHER_TOOLS_FLAGS:
                    broken.append(f"{page.relative_to(REPO)}: `{span}` names {word}, which no verb has")
    assert not broken, "flags the CLI does not have:\n" + "\n".join(broken)
    assert checked > 30


def test_the_command_check_catches_a_renamed_flag_and_a_wrong_recipe_key():
    assert check_command(["eval", "runs/x", "--data", "qa.jsonl", "--top-k", "2"]) is None
    assert "unrecognized arguments: --topk" in check_command(["eval", "runs/x", "--data", "q.jsonl", "--topk", "2"])
    assert check_command(["train", "cars_qa", "training.epochs=2"]) is None
    assert "training.epoch" in check_command(["train", "cars_qa", "training.epoch=2"])
    assert "training.learning_rat" in check_command(["train", "my_recipe.yaml", "training.learning_rat=1e-4"])
    assert hftoolkit_argv("HF_TOKEN=x hftoolkit push runs/a me/b && hftoolkit pull me/b runs/c  # both") == [
        ["push", "runs/a", "me/b"], ["pull", "me/b", "runs/c"]]
    assert hftoolkit_argv("torchrun --nproc_per_node 2 -m hftoolkit train gpt_from_scratch") == [
        ["train", "gpt_from_scratch"]]
    assert hftoolkit_argv("pip install hftoolkit") == []
    assert check_mention(["index", "build", "--out"]) is None
    assert "--outdir" in check_mention(["index", "build", "--outdir"])
    assert "not a whole verb" in check_mention(["index", "built"])
    assert check_mention(["train", "cars_qa", "training.epochs=2"]) is None
    assert "training.epoch" in check_mention(["train", "cars_qa", "training.epoch=2"])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_slugs(path: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slugify(re.sub(r"[`*]", "", m.group(1)).strip(), "-") for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def test_every_relative_link_and_image_resolves():
    checked, broken = 0, []
    for page in doc_files():
        prose = INLINE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
        for target in LINK.findall(prose):
            if re.match(r"[a-z]+:", target):
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_slugs(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert checked > 30


def python_pages() -> list[Path]:
    return [page for page in doc_files()
            if any(lang == "python" for lang, _ in fenced_blocks(page.read_text(encoding="utf-8")))]


@pytest.fixture(scope="module")
def reader_workspace(tmp_path_factory, tiny_chat_model, brakes_tyres_index) -> Path:
    """The folder a reader of the guides would have: the quickstart's checkpoint and index (small stand-ins),
    a recipe copied to edit (a tiny one) and a folder of their own text files."""
    root = tmp_path_factory.mktemp("reader")
    shutil.copytree(tiny_chat_model, root / "runs" / "cars_qa")
    (root / "runs" / "cars_index").symlink_to(brakes_tyres_index, target_is_directory=True)
    docs = root / "my_docs"
    docs.mkdir()
    corpus = REPO / "hftoolkit" / "corpora" / "cars" / "text" / "train"
    for name in ("06_brakes.txt", "07_tyres.txt"):
        shutil.copy(corpus / name, docs / name)
    recipe = yaml.safe_load(tiny_recipe(tmp_path_factory.mktemp("recipe")).read_text())
    recipe["output"]["dir"] = "runs/my_model"
    (root / "my_recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


@pytest.mark.parametrize("page", python_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_in_the_docs_run(page, reader_workspace):
    blocks = [body for lang, body in fenced_blocks(page.read_text(encoding="utf-8")) if lang == "python"]
    script = "\n".join(blocks)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    server = None
    if "127.0.0.1:8000" in script:  # the serving guide's client talks to `hftoolkit serve runs/cars_qa`, as a reader's
        server = subprocess.Popen([sys.executable, "-m", "hftoolkit", "serve", "runs/cars_qa", "--cache", "off"],
                                  cwd=reader_workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy("http://127.0.0.1:8000/health", server)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                              cwd=reader_workspace, env=env)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert done.returncode == 0, f"{page.relative_to(REPO)}'s Python blocks failed:\n{done.stderr[-3000:]}"


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the server exited (is port 8000 taken?)"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, f"{url} not healthy"
        time.sleep(0.2)


def test_the_site_builds_strict_and_offline(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
                               "HTTP_PROXY": "http://127.0.0.1:9"})
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    assert "hftoolkit.app.train" in api and "TextGenerator" in api
    recipe = (tmp_path / "site" / "reference" / "recipe" / "index.html").read_text(encoding="utf-8")
    assert "data.retrieval.sentences" in recipe
