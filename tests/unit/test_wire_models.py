"""The generated pydantic models match the schemas, validate input and dump what the codec takes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.wire import models
from services.wire.codec import AvroCodec
from services.wire.gen_models import GENERATOR, MODELS_PATH, render_models
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from tests.unit.wire_values import REQUEST, values_of

REGISTRY = SchemaRegistry.load(REPO_SCHEMAS_DIR)
CODEC = AvroCodec(REGISTRY)


def test_the_generated_models_file_is_up_to_date() -> None:
    assert MODELS_PATH.read_text(encoding="utf-8") == render_models(REGISTRY), (
        f"services/wire/models.py is stale: run `{GENERATOR}` and commit the result"
    )


def test_every_record_has_a_model() -> None:
    assert sorted(models.RECORD_MODELS) == REGISTRY.names()


def test_a_model_fills_defaults_like_the_schema() -> None:
    request = models.Request(**REQUEST)

    assert request.locale == "en-US"
    assert request.attributes == {}
    assert request.customer_id is None
    assert request.channel is models.Channel.KIOSK


def test_a_model_rejects_a_missing_required_field() -> None:
    with pytest.raises(ValidationError, match="text"):
        models.Request(**{key: value for key, value in REQUEST.items() if key != "text"})


def test_a_model_rejects_an_unknown_field() -> None:
    with pytest.raises(ValidationError, match="custmer_id"):
        models.Request.model_validate({**REQUEST, "custmer_id": "c-1"})


def test_a_model_rejects_an_unknown_enum_symbol() -> None:
    with pytest.raises(ValidationError, match="channel"):
        models.Request(**{**REQUEST, "channel": "FAX"})


def test_a_model_rejects_an_int_outside_avro_int() -> None:
    with pytest.raises(ValidationError, match="quantity"):
        models.InventoryItem(
            store_id="s", sku="k", product="p", variant="", quantity=2**31, price_cents=100, updated_at=0
        )


@pytest.mark.parametrize("name", REGISTRY.names())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_decoded_record_round_trips_through_its_model(name: str, data: st.DataObject) -> None:
    _, decoded = CODEC.decode(CODEC.encode(name, data.draw(values_of(REGISTRY.entry(name).schema))))

    dumped = models.RECORD_MODELS[name](**decoded).model_dump()

    assert dumped == decoded
    assert CODEC.decode(CODEC.encode(name, dumped)) == (name, decoded)
