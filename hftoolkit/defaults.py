"""Every default a user meets, defined once. The library, the app verbs, the command line (its --help shows
them) and the HTTP server all read them here; this module imports nothing, so the CLI can build its parser
without loading torch."""

# generate / chat / serve
MAX_NEW_TOKENS = 64
CHAT_MAX_NEW_TOKENS = 256  # a chat turn is an answer, not a continuation
GENERATE_BATCH = 8
CACHE = "disk"  # off | memory | disk | FOLDER | redis://host:port/db
CONTEXT = "auto"  # the index the checkpoint was trained with, when it exists
# retrieval for a checkpoint not trained with it (no retrieval.json), measured with base SmolLM2-135M-Instruct:
# 44/101 held-out car answers and 12/16 on an unseen corpus, against 34/101 and 9/16 with 3 whole passages
# (docs/guides/retrieval.md)
CONTEXT_TOP_K = 2
CONTEXT_SENTENCES = 6  # the sentences of the retrieved passages closest to the question; 0: whole passages
CONTEXT_TOKENS = 384
PROMPT_LOOKUP_TOKENS = 5  # one greedy answer: prompt tokens proposed per check (docs/performance.md)
# of plain greedy on cars_qa answers with retrieval, same ids (3: 1.05x, 10: 1.18x; benchmarks/answer_speed.py)
GENERATE_PRECISION = "fp32"  # generate, chat: the precision the held-out answers were measured in (docs/evaluation.md)

# serve
SERVE_HOST = "127.0.0.1"  # loopback: reachable from this machine only, until a key is set
SERVE_PORT = 8000
SERVE_PRECISION = "auto"  # bf16 where this CPU's bf16 matmuls are faster (1.6x the tokens/s of fp32 at batch 8)
SERVE_MAX_BATCH = 8  # concurrent requests generated together (measured: benchmarks/results/serving-*.json)

# eval
EVAL_GENERATION_BATCH = 16  # questions per batch; encoders default to the batch their recipe trained with

# index build / search
EMBEDDER = "minilm-l6"
CHUNK_TOKENS = 96  # about a paragraph; 128 answered 11/16 against 12/16 on the unseen corpus (same flags)
OVERLAP_TOKENS = 32
SEARCH_TOP_K = 3

# classify / fill-mask
CLASSIFY_TOP_K = 1
CLASSIFY_BATCH = 32
FILL_MASK_TOP_K = 5

# push / pull
REVISION = "main"

# quickstart
QUICKSTART_DIR = "runs/cars_qa"

# data
IMPORT_FORMAT = "text"
SHOW_ROWS = 3
EXPORT_MIN_RATING = "good"
EXPORT_AS = "qa"  # data export-log: question/answer rows; preference/rated for dpo/kto
