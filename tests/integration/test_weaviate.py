"""weaviate-client against the real Weaviate server: a collection with self-provided vectors (Switchyard
embeds on its own), batch insert, nearest-vector search, a filtered search and hybrid (BM25 + vector)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.init import Auth
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.collections import Collection

from services.settings import Settings

PASSAGES = [
    ("returns", "Returns are taken back within 30 days with a receipt; sale items within 14 days.", "policy"),
    ("price-match", "We match a local competitor's advertised price on identical items in stock.", "policy"),
    ("loyalty", "Gold loyalty members earn double points on outerwear every weekend.", "loyalty"),
    ("jacket", "The waxed field jacket comes in olive and navy, sizes S to XXL.", "product"),
]


def vector_for(index: int, dimensions: int = 8) -> list[float]:
    """A distinct unit vector per passage, so the nearest neighbour is known in advance."""
    raw = [1.0 if d == index else 0.1 for d in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


@pytest.fixture
def passages(settings: Settings, weaviate_url: str) -> Iterator[Collection]:
    key = settings.weaviate_api_key
    client = weaviate.connect_to_local(
        host=settings.weaviate_host,
        port=settings.weaviate_http_port,
        grpc_port=settings.weaviate_grpc_port,
        auth_credentials=Auth.api_key(key.get_secret_value()) if key else None,
    )
    name = f"ItPassages{uuid.uuid4().hex[:8]}"
    try:
        collection = client.collections.create(
            name,
            vector_config=Configure.Vectors.self_provided(),
            properties=[
                Property(name="slug", data_type=DataType.TEXT),
                Property(name="text", data_type=DataType.TEXT),
                Property(name="category", data_type=DataType.TEXT),
            ],
        )
        with collection.batch.fixed_size(batch_size=50) as batch:
            for index, (slug, text, category) in enumerate(PASSAGES):
                batch.add_object(
                    properties={"slug": slug, "text": text, "category": category},
                    vector=vector_for(index),
                    uuid=uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{slug}"),
                )
        assert not collection.batch.failed_objects, collection.batch.failed_objects
        yield collection
    finally:
        client.collections.delete(name)
        client.close()


def test_nearest_vector_search_finds_the_passage_whose_vector_is_closest(passages: Collection) -> None:
    assert passages.aggregate.over_all(total_count=True).total_count == len(PASSAGES)
    result = passages.query.near_vector(vector_for(2), limit=2, return_metadata=MetadataQuery(distance=True))
    assert result.objects[0].properties["slug"] == "loyalty"
    distances = [o.metadata.distance for o in result.objects]
    assert distances[0] is not None and distances[1] is not None
    assert distances[0] < 1e-4 < distances[1]


def test_a_filter_restricts_vector_search_to_one_category(passages: Collection) -> None:
    result = passages.query.near_vector(vector_for(3), limit=4, filters=Filter.by_property("category").equal("policy"))
    assert {o.properties["slug"] for o in result.objects} == {"returns", "price-match"}


def test_hybrid_search_combines_keywords_with_the_vector(passages: Collection) -> None:
    result = passages.query.hybrid(query="receipt returns", vector=vector_for(0), alpha=0.5, limit=1)
    assert result.objects[0].properties["slug"] == "returns"


def test_stable_ids_make_a_second_insert_of_the_same_passage_an_update(passages: Collection) -> None:
    slug, text, category = PASSAGES[0]
    object_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{passages.name}/{slug}")
    passages.data.replace(
        uuid=object_id,
        properties={"slug": slug, "text": text + " Updated.", "category": category},
        vector=vector_for(0),
    )
    assert passages.aggregate.over_all(total_count=True).total_count == len(PASSAGES)
    fetched = passages.query.fetch_object_by_id(object_id)
    assert fetched is not None and str(fetched.properties["text"]).endswith("Updated.")
