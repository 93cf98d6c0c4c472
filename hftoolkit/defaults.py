"""Every default a user meets, defined once. The library, the app verbs, the command line (its --help shows
them) and the HTTP server all read them here; this module imports nothing, so the CLI can build its parser
without loading torch."""

# generate / chat / serve
MAX_NEW_TOKENS = 64
CHAT_MAX_NEW_TOKENS = 256  # a chat turn is an answer, not a continuation
GENERATE_BATCH = 8
CACHE = "disk"  # off | memory | disk | FOLDER | redis://host:port/db
CONTEXT = "auto"  # the index the checkpoint was trained with, when it exists

# eval
EVAL_GENERATION_BATCH = 16  # questions per batch; encoders default to the batch their recipe trained with

# index build / search
EMBEDDER = "minilm-l6"
CHUNK_TOKENS = 128
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
