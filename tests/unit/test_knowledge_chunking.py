"""Chunking of knowledge-base markdown: front matter, heading paths, passage sizes and stable ids (no Weaviate)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.stitcher.knowledge import (
    DEFAULT_SOURCES_DIR,
    MAX_WORDS,
    MIN_WORDS,
    KnowledgeSourceError,
    chunk_markdown,
    load_chunks,
    parse_front_matter,
    passage_id,
)
from services.tools.eval.retrieval import load_queries

FRONT = "---\ncategory: returns\nregion: us-east\neffective: 2026-03-01\n---\n"


def words(count: int, word: str = "word") -> str:
    return " ".join([word] * (count - 1)) + "."


def test_front_matter_is_parsed_into_category_region_and_effective_date() -> None:
    meta, body = parse_front_matter(FRONT + "# Title\n", "returns.md")
    assert (meta.category, meta.region, meta.effective) == ("returns", "us-east", dt.date(2026, 3, 1))
    assert body == "# Title\n"


@pytest.mark.parametrize(
    ("front", "key"),
    [
        ("category: refunds\nregion: all\neffective: 2026-03-01", "category"),
        ("category: returns\nregion: Europe\neffective: 2026-03-01", "region"),
        ("category: returns\nregion: all\neffective: soon", "effective"),
    ],
)
def test_invalid_front_matter_names_the_file_and_the_key(front: str, key: str) -> None:
    with pytest.raises(KnowledgeSourceError, match=rf"bad\.md: {key}"):
        parse_front_matter(f"---\n{front}\n---\nbody\n", "bad.md")


def test_a_file_without_front_matter_is_refused() -> None:
    with pytest.raises(KnowledgeSourceError, match="no front matter"):
        chunk_markdown("# Returns\n\nSome text.\n", "returns.md")


def test_each_paragraph_becomes_a_passage_under_its_heading_path() -> None:
    text = FRONT + f"# Returns\n\n## Window\n\n{words(50)}\n\n{words(60)}\n\n## Sale items\n\n{words(45)}\n"
    chunks = chunk_markdown(text, "policies/returns.md")
    assert [(c.heading, c.index) for c in chunks] == [
        ("Returns > Window", 0),
        ("Returns > Window", 1),
        ("Returns > Sale items", 0),
    ]
    assert all(c.source == "policies/returns.md" and c.meta.region == "us-east" for c in chunks)


def test_short_paragraphs_are_merged_until_a_passage_is_long_enough() -> None:
    text = FRONT + f"## Exchanges\n\n{words(15)}\n\n{words(15)}\n\n{words(15)}\n"
    [chunk] = chunk_markdown(text, "returns.md")
    assert chunk.text.count("\n\n") == 2


def test_a_paragraph_over_the_limit_is_split_on_sentence_boundaries() -> None:
    sentence = words(30, "refund")
    text = FRONT + "## Refunds\n\n" + " ".join([sentence] * 8) + "\n"
    chunks = chunk_markdown(text, "returns.md")
    assert len(chunks) == 2
    assert all(MIN_WORDS <= len(c.text.split()) <= MAX_WORDS for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)


def test_passage_ids_are_stable_and_depend_on_source_heading_and_index() -> None:
    text = FRONT + f"## Window\n\n{words(50)}\n\n{words(50)}\n"
    first = [c.passage_id for c in chunk_markdown(text, "returns.md")]
    assert first == [c.passage_id for c in chunk_markdown(text, "returns.md")]
    assert first == [passage_id("returns.md", "Window", 0), passage_id("returns.md", "Window", 1)]
    assert passage_id("returns.md", "Window", 0) != passage_id("loyalty.md", "Window", 0)


def test_editing_a_passage_keeps_its_id_but_changes_its_content_hash() -> None:
    text = FRONT + f"## Window\n\n{words(50)}\n"
    [before] = chunk_markdown(text, "returns.md")
    [after] = chunk_markdown(text.replace("word.", "receipt."), "returns.md")
    assert before.passage_id == after.passage_id
    assert before.content_hash("model-1") != after.content_hash("model-1")
    assert before.content_hash("model-1") != before.content_hash("model-2")


def test_the_embedded_text_leads_with_the_section_heading() -> None:
    [chunk] = chunk_markdown(FRONT + f"# FAQ\n\n## Can I return worn shoes?\n\n{words(45)}\n", "faq.md")
    assert chunk.embedding_text.startswith("Can I return worn shoes? word word")


def test_the_shipped_knowledge_base_has_at_least_200_passages_of_sensible_size() -> None:
    sources, chunks = load_chunks(DEFAULT_SOURCES_DIR)
    assert sources >= 40
    assert len(chunks) >= 200
    assert len({c.passage_id for c in chunks}) == len(chunks)
    sizes = [len(c.text.split()) for c in chunks]
    assert min(sizes) >= 25 and max(sizes) <= 2 * MAX_WORDS


def test_loading_a_missing_folder_says_which_folder(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeSourceError, match="not a folder"):
        load_chunks(tmp_path / "nowhere")


def test_the_labelled_query_set_has_50_questions_each_answered_by_a_shipped_passage() -> None:
    queries = load_queries()
    assert len(queries) >= 50
    assert len({q.q for q in queries}) == len(queries)
    _, chunks = load_chunks(DEFAULT_SOURCES_DIR)
    known = {(c.source, c.heading) for c in chunks}
    missing = [q.q for q in queries if (q.answer.source, q.answer.heading) not in known]
    assert missing == []
