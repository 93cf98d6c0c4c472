"""`hftoolkit generate`, `chat` and `cache`: argument handling over `generate.api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hftoolkit.errors import UserError


def read_prompts(prompts: list[str], file: str | None) -> list:
    """Prompts from the command line and/or a .txt (one per line) or .jsonl file (prompt or messages)."""
    items = list(prompts)
    if file:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"--file: '{file}' does not exist")
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"--file: '{file}' is not UTF-8 text; save it as UTF-8") from None
        if path.suffix == ".jsonl":
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise UserError(f"--file: line {number} of '{file}' is not JSON") from None
                value = (row.get("messages") or row.get("prompt") or row.get("question") or row.get("text")
                         if isinstance(row, dict) else row)
                if value is None:
                    raise UserError(f"--file: line {number} of '{file}' has no prompt/question/messages field")
                items.append(value)
        else:
            items += [line for line in path.read_text().splitlines() if line.strip()]
    if not items and file:
        raise UserError(f"--file: '{file}' holds no prompts; write one prompt per line (or JSON lines)")
    if not items:
        raise UserError("no prompts: give PROMPT arguments or --file")
    return items


def settings_from(args):
    from hftoolkit.generate.engine import GenerationSettings

    return GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.sample_top_k, repetition_penalty=args.repetition_penalty, stop=args.stop or [],
                              seed=args.seed, greedy=args.greedy,
                              num_beams=1 if args.greedy else None)


def cmd_generate(args) -> None:
    from hftoolkit.db.uri import redact
    from hftoolkit.generate.api import TextGenerator

    prompts = read_prompts(args.prompts, args.file)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731 - stdout carries only results
    generator = TextGenerator(args.checkpoint, cache=args.cache, system=args.system, log=log,
                              request_log=args.log, **context_from(args))
    settings = settings_from(args)
    chat = args.chat or (not args.raw and generator.has_chat_template)  # a chat model answers questions
    if args.stream:
        for prompt in prompts:
            for piece in generator.stream(prompt, chat=chat, settings=settings):
                print(piece, end="", flush=True)
            print()
        return
    for prompt, done in zip(prompts, generator.generate(prompts, chat, settings, args.batch_size)):
        if args.json:
            print(json.dumps({"prompt": prompt, "completion": done.completion, "tokens": done.tokens,
                              "seconds": done.seconds, "cached": done.cached, "sources": done.sources,
                              **({"log_id": done.log_id} if args.log else {})}))
        else:
            print(done.completion.strip() if chat else str(prompt) + done.completion)
            for source in done.sources:
                log(f"  source: {source['file']} [{source['start']}:{source['end']}] score {source['score']:.3f}")
            if done.log_id is not None:
                log(f"  logged as #{done.log_id} (rate it: hftoolkit data rate {redact(args.log)} {done.log_id} "
                    "good|bad)")


def cmd_chat(args) -> None:
    from hftoolkit.generate.api import TextGenerator

    generator = TextGenerator(args.checkpoint, cache="off", system=args.system,
                              log=lambda m: print(m, file=sys.stderr), request_log=args.log, **context_from(args))
    settings = settings_from(args)
    history: list[dict] = []
    print("chat with", args.checkpoint, "- /reset clears the conversation, /exit quits", file=sys.stderr)
    for line in _input_lines():
        message = line.strip()
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            history = []
            print("(conversation cleared)")
            continue
        if not message:
            continue
        history.append({"role": "user", "content": message})
        reply = ""
        for piece in generator.stream(history, chat=True, settings=settings):
            reply += piece
            print(piece, end="", flush=True)
        print()
        if generator.last_log_id is not None:
            print(f"(logged as #{generator.last_log_id})", file=sys.stderr)
        history.append({"role": "assistant", "content": reply.strip()})


def _input_lines():
    """Lines typed at a prompt (interactive) or read from a pipe, until end of input."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            return


def cmd_cache(args) -> None:
    from hftoolkit.generate.cache import open_backend
    from hftoolkit.redact import redact

    backend = open_backend(args.cache)
    if backend is None:
        raise UserError("--cache off has nothing to show; name disk, a folder or redis://host:port/db")
    try:
        if args.action == "stats":
            print(json.dumps(backend.stats(), indent=2))
        else:
            print(f"removed {backend.clear()} cached responses from {backend.name}")
    except Exception as exc:  # an unreachable Redis is a user-facing condition here
        raise UserError(f"cache {redact(args.cache)} is unavailable ({type(exc).__name__}: "
                        f"{redact(exc)[:120]})") from None


def context_from(args) -> dict:
    """TextGenerator's retrieval arguments from --context/--no-context/--top-k/--context-tokens."""
    return {"context": "off" if args.no_context else args.context, "top_k": args.top_k,
            "context_tokens": args.context_tokens, "sentences": args.sentences}


def add_context_options(parser) -> None:
    parser.add_argument("--context", default="auto", metavar="INDEX",
                        help="answer from passages retrieved from this corpus index (default: the index the "
                             "checkpoint was trained with, when it exists)")
    parser.add_argument("--no-context", action="store_true", help="no retrieval, even if the checkpoint has an index")
    parser.add_argument("--top-k", type=int, help="passages to retrieve per question (default: as trained, else 3)")
    parser.add_argument("--context-tokens", type=int,
                        help="most tokens of passages per prompt (default: as trained, else 384); the prompt "
                             "never outgrows the model's window")
    parser.add_argument("--sentences", type=int, metavar="N",
                        help="put only the N sentences of the retrieved passages most similar to the question "
                             "into the prompt; 0: whole passages (default: as trained, else 0)")


def add_generation_options(parser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, help="sample with this temperature (default: the "
                        "checkpoint's generation_config when it samples, else greedy)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling: the smallest token set with this probability")
    parser.add_argument("--sample-top-k", type=int, help="sample only from the K most likely tokens")
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--stop", action="append", help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, help="seed for sampling; makes sampled answers cacheable")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding even when the checkpoint's "
                        "generation_config asks to sample or to search beams")
    parser.add_argument("--system", help="system message for chat mode (default: the one it was trained with)")
    parser.add_argument("--log", metavar="URI", help="record every request and answer in this database "
                        "(sqlite:///answers.db or postgresql://...) for `hftoolkit data rate`/`export-log`")
    add_context_options(parser)


def register(sub) -> None:
    gen = sub.add_parser("generate", help="generate from a checkpoint (cached)")
    gen.add_argument("checkpoint")
    gen.add_argument("prompts", nargs="*")
    gen.add_argument("--file", help="prompts: .txt one per line, or .jsonl with prompt/question/messages")
    gen.add_argument("--chat", action="store_true",
                     help="apply the checkpoint's chat template (the default when it has one)")
    gen.add_argument("--raw", action="store_true", help="continue the prompt text as is, even with a chat template")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come (no cache)")
    gen.add_argument("--json", action="store_true", help="one JSON object per prompt")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--cache", default="disk", help="off | memory | disk | FOLDER | redis://host:port/db")
    add_generation_options(gen)
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="interactive chat with a checkpoint (streaming; /reset, /exit)")
    chat.add_argument("checkpoint")
    add_generation_options(chat)
    chat.set_defaults(func=cmd_chat, max_new_tokens=256)

    cache = sub.add_parser("cache", help="response cache: stats or clear")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--cache", default="disk")
    cache.set_defaults(func=cmd_cache)
