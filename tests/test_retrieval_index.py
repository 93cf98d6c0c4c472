"""Corpus index: chunking, real MiniLM search, incremental rebuilds, and bad input."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.paths import resolve_data_path
from hftoolkit.retrieval.chunking import Span, chunk_spans
from hftoolkit.retrieval.index import IndexSettings, Retriever, build_index
from hftoolkit.retrieval.store import VectorStore

CARS = Path(resolve_data_path("bundled://corpora/cars/text/train"))
QUIET = lambda message: None  # noqa: E731


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("06_brakes.txt", "07_tyres.txt", "09_electrical.txt"):
        shutil.copy(CARS / name, folder / name)
    return folder


def test_chunks_overlap_and_respect_the_size():
    sentences = [Span(i * 10, i * 10 + 9, 30, paragraph=0) for i in range(10)]  # ten 30-token sentences
    chunks = chunk_spans(sentences, chunk_tokens=100, overlap_tokens=30)
    assert chunks[0] == (0, 29)  # three sentences (90 tokens) fit, a fourth would not
    assert chunks[1][0] == 20  # the next chunk repeats the last sentence (30 tokens of overlap)
    assert chunks[-1][1] == 99  # nothing is dropped at the end
    assert all(end - start <= 29 for start, end in chunks)


def test_a_paragraph_break_ends_a_half_full_chunk():
    sentences = [Span(0, 9, 60, 0), Span(10, 19, 20, 1), Span(20, 29, 20, 1)]
    assert chunk_spans(sentences, chunk_tokens=100, overlap_tokens=30) == [(0, 9), (10, 29)]


def test_search_finds_the_right_chunk_for_differently_worded_questions(corpus, tmp_path):
    index = tmp_path / "index"
    stats = build_index(str(corpus), str(index), log=QUIET)
    assert stats["files"] == 3 and stats["embedded_files"] == 3 and stats["chunks"] >= 20
    retriever = Retriever(str(index), log=QUIET)
    questions = {  # none of these shares its key words with the sentence that answers it
        "How thick is the friction lining on a fresh set of pads?": "10 to 12 millimetres",
        "What number on the sidewall says how heavy a load the tyre can take?": "load index",
        "Which gadget turns the engine over when you turn the key?": "starter motor",
    }
    for question, fact in questions.items():
        hits = retriever.search(question, top_k=defaults.CONTEXT_TOP_K)  # as many as generation puts in a prompt
        assert any(fact in hit.text for hit in hits), (question, [hit.text[:80] for hit in hits])
        for hit in hits:
            text = (corpus / hit.file).read_text()
            assert text[hit.start:hit.end] == hit.text  # offsets point into the source file
            assert 0 < hit.score <= 1


def test_sentences_are_ranked_within_the_retrieved_chunks(corpus, tmp_path):
    index = tmp_path / "index"
    build_index(str(corpus), str(index), IndexSettings(chunk_tokens=96, overlap_tokens=24), log=QUIET)
    retriever = Retriever(str(index), log=QUIET)
    question = "How thick is the friction lining on a fresh set of pads?"
    chunks = retriever.search(question, top_k=3)
    best = retriever.search(question, top_k=3, sentences=2)
    assert len(best) == 2 and best[0].score >= best[1].score
    assert "10 to 12 millimetres" in best[0].text and len(best[0].text) < len(chunks[0].text)
    everything = retriever.search(question, top_k=3, sentences=1000)
    assert len({(h.file, h.start) for h in everything}) == len(everything)  # overlapping chunks: each sentence once
    for hit in everything:
        assert (corpus / hit.file).read_text()[hit.start:hit.end] == hit.text  # offsets into the source file
        assert any(c.file == hit.file and c.start <= hit.start and hit.end <= c.end for c in chunks)
        assert hit.text.count(". ") == 0  # one sentence, not a chunk
    assert [h.score for h in everything] == sorted((h.score for h in everything), reverse=True)
    top = chunks[0]
    inside = sorted((h for h in everything if h.file == top.file and top.start <= h.start < top.end),
                    key=lambda h: h.start)
    assert " ".join(" ".join(h.text for h in inside).split()) == " ".join(top.text.split())  # nothing lost


def test_many_questions_at_once_rank_as_one_at_a_time(corpus, tmp_path):
    """search_many embeds every question's sentences in one pass, longest texts batched first; each
    question's ranking and scores are those it gets alone, in its own order."""
    index = tmp_path / "index"
    build_index(str(corpus), str(index), IndexSettings(chunk_tokens=96, overlap_tokens=24), log=QUIET)
    questions = ["How thick is the friction lining on a fresh set of pads?", "Which gadget turns the engine over?",
                 "What number on the sidewall says how heavy a load the tyre can take?", "Why do brakes squeal?"]
    together = Retriever(str(index), log=QUIET).search_many(questions, top_k=2, sentences=5)
    for question, hits in zip(questions, together):
        alone = Retriever(str(index), log=QUIET).search(question, top_k=2, sentences=5)
        assert [(h.file, h.start, h.end) for h in hits] == [(h.file, h.start, h.end) for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)
    embedder = Retriever(str(index), log=QUIET).embedder
    texts = ["Brakes.", "A much longer sentence about the tread depth of a worn winter tyre on a wet road.", "Oil."]
    batched = embedder.encode(texts)
    for text, vector in zip(texts, batched):
        assert float(vector @ embedder.encode([text])[0]) == pytest.approx(1.0, abs=1e-5)


def test_rebuild_embeds_only_changed_files(corpus, tmp_path):
    index = tmp_path / "index"
    build_index(str(corpus), str(index), log=QUIET)
    store = VectorStore(index)
    tyres_before = [(h.chunk_id, h.text) for h in store.chunks() if h.file == "07_tyres.txt"]
    fingerprint = store.fingerprint()

    unchanged = build_index(str(corpus), str(index), log=QUIET)
    assert unchanged["embedded_files"] == 0 and unchanged["unchanged_files"] == 3

    (corpus / "06_brakes.txt").write_text((corpus / "06_brakes.txt").read_text() +
                                          "\n\nCeramic pads make very little dust and last a long time.\n")
    (corpus / "09_electrical.txt").unlink()
    changed = build_index(str(corpus), str(index), log=QUIET)
    assert (changed["embedded_files"], changed["unchanged_files"], changed["removed_files"]) == (1, 1, 1)
    store = VectorStore(index)
    assert [(h.chunk_id, h.text) for h in store.chunks() if h.file == "07_tyres.txt"] == tyres_before
    assert not [h for h in store.chunks() if h.file == "09_electrical.txt"]
    assert store.fingerprint() != fingerprint
    retriever = Retriever(str(index), log=QUIET)
    assert "Ceramic" in retriever.search("Which brake pads create hardly any dust?", top_k=1)[0].text


def test_search_survives_a_lost_vector_file(corpus, tmp_path):
    index = tmp_path / "index"
    build_index(str(corpus), str(index), log=QUIET)
    for file in index.glob("vectors-*.usearch"):
        file.write_bytes(b"not a usearch file")
    hits = Retriever(str(index), log=QUIET).search("When must brake fluid be changed?", top_k=2)
    assert "two years" in " ".join(h.text for h in hits)


def test_cli_build_and_search_json(corpus, tmp_path):
    index = tmp_path / "index"
    done = run_cli("index", "build", corpus, "--out", index, "--chunk-tokens", "96")
    assert done.returncode == 0, done.stderr[-1500:]
    assert VectorStore(index).meta()["chunk_tokens"] == 96
    done = run_cli("index", "search", index, "How deep must tyre tread legally be?", "--top-k", "2", "--json")
    assert done.returncode == 0, done.stderr[-1500:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    assert "1.6 millimetres" in rows[0]["text"] and rows[0]["file"] == "07_tyres.txt"
    assert rows[0]["score"] >= rows[1]["score"]


@pytest.mark.parametrize("args, message", [
    (["index", "build", "/nonexistent/corpus", "--out", "{tmp}/i"], "does not exist"),
    (["index", "build", "{corpus}", "--out", "{tmp}/notes"], "not an index"),
    (["index", "build", "{corpus}", "--out", "{tmp}/i", "--chunk-tokens", "4"], "--chunk-tokens"),
    (["index", "search", "{tmp}/notes", "brakes"], "not a corpus index"),
    (["index", "search", "{tmp}/i", "brakes", "--top-k", "0"], "--top-k"),
])
def test_bad_input_is_one_line_and_changes_nothing(corpus, tmp_path, args, message):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("my notes")
    done = run_cli(*[a.format(tmp=tmp_path, corpus=corpus) for a in args])
    assert done.returncode == 2, done.stderr[-800:]
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (notes / "mine.txt").read_text() == "my notes" and sorted(p.name for p in notes.iterdir()) == ["mine.txt"]


def test_non_utf8_corpus_file_is_a_user_error(corpus, tmp_path):
    (corpus / "latin1.txt").write_bytes("Pneus d'été: 2 à 3 bar".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt.*not UTF-8"):
        build_index(str(corpus), str(tmp_path / "index"), IndexSettings(), log=QUIET)
    assert not (tmp_path / "index").exists()  # nothing half-written
