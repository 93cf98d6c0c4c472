"""`hftoolkit data import|show|rate|export-log`: argument handling over `db.importer` and `db.generation_log`."""

from __future__ import annotations

import json


def cmd_import(args) -> None:
    from hftoolkit.db.importer import import_files
    from hftoolkit.db.uri import redact

    done = import_files(args.files, args.to, args.table, args.format)
    print(f"{redact(args.to)} table {args.table}: {done.rows_added} rows added from {done.files} file(s), "
          f"{done.duplicates} already there; {done.rows_in_table} rows in all")


def cmd_show(args) -> None:
    from hftoolkit.db.importer import show_table

    shown = show_table(args.uri, args.table, args.rows)
    if args.json:
        print(json.dumps(shown, default=str))
        return
    print(f"{shown['table']}: {shown['rows']} rows; columns: {', '.join(shown['columns'])}")
    for row in shown["first"]:
        print("  " + " | ".join(f"{k}={' '.join(str(v).split())[:70]}" for k, v in row.items() if k != "content_hash"))


def cmd_rate(args) -> None:
    from hftoolkit.db.generation_log import rate

    row = rate(args.uri, args.id, args.rating, args.fix)
    fixed = f"; corrected to: {row['correction']}" if row["correction"] else ""
    print(f"#{row['id']} rated {row['rating']}: {row['prompt']} -> {row['answer']}{fixed}")


def cmd_export_log(args) -> None:
    from hftoolkit.db.generation_log import export_answers

    count = export_answers(args.uri, args.min_rating, args.out)
    print(f"wrote {count} question/answer rows to {args.out}; train on it with data.train: {args.out} "
          "(data.format: qa)")


def register(sub) -> None:
    data = sub.add_parser("data", help="training data and generation logs in databases").add_subparsers(
        dest="action", required=True)
    uri_help = "sqlite:///path.db or postgresql://user@host:port/db (password: URI, PGPASSWORD or ~/.pgpass)"

    imp = data.add_parser("import", help="load text/CSV/JSONL/parquet files into a table (re-import skips "
                          "rows already there)")
    imp.add_argument("files", nargs="+", help="files, folders or globs, read as recipes read them")
    imp.add_argument("--to", required=True, metavar="URI", help=uri_help)
    imp.add_argument("--table", required=True)
    imp.add_argument("--format", default="text", choices=["text", "qa", "chat", "classification"],
                     help="columns: text | question, answer | messages | text, label")
    imp.set_defaults(func=cmd_import)

    show = data.add_parser("show", help="row count, columns and the first rows of a table")
    show.add_argument("uri", metavar="URI", help=uri_help)
    show.add_argument("--table", required=True)
    show.add_argument("--rows", type=int, default=3)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    rate = data.add_parser("rate", help="judge a logged answer (generate/chat --log URI)")
    rate.add_argument("uri", metavar="URI")
    rate.add_argument("id", type=int, metavar="ID", help="the log id printed by generate --log")
    rate.add_argument("rating", metavar="RATING", type=str.lower, choices=["good", "bad"], help="good or bad")
    rate.add_argument("--fix", help="the corrected answer (exported in place of the logged one)")
    rate.set_defaults(func=cmd_rate)

    export = data.add_parser("export-log", help="rated answers as question/answer JSONL for training")
    export.add_argument("uri", metavar="URI")
    export.add_argument("--min-rating", default="good", choices=["good", "bad"],
                        help="good: answers rated good and every corrected answer; bad: all rated answers")
    export.add_argument("--out", required=True, help="new .jsonl file (an existing file is never overwritten)")
    export.set_defaults(func=cmd_export_log)
