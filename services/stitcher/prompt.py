"""Prompt templates (one versioned YAML file per route under `templates/`, `default.yaml` for the rest) and the
rendering of a request and its context items into a system and a user message, each kind of context in its own
clearly delimited section. Text inside a section is data: markup that could close or open a section is
neutralised, and passages flagged as instruction-like say so."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.stitcher.budget import DEFAULT_PRIORITY
from services.stitcher.prep import INVENTORY_HEADER
from services.wire.models import ContextItem, PromptMessage

TEMPLATES_DIR: Final = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE: Final = "default"

Section = Literal["store", "customer", "inventory", "customer_history", "knowledge_base", "request"]
SECTION_SOURCES: Final[dict[str, str]] = {
    "store": "store_hours",
    "customer": "customer",
    "inventory": "inventory",
    "customer_history": "customer_history",
    "knowledge_base": "knowledge_base",
}


class TemplateError(ValueError):
    """A template file is invalid; the message names the file, the key and the fix."""


class PromptTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    version: str = Field(min_length=1)
    token_budget: int = Field(gt=0, description="tokens the context items may take")
    system: str = Field(min_length=1)
    sections: tuple[Section, ...] = Field(description="section order in the user message; must include request")
    priority: tuple[str, ...] = Field(DEFAULT_PRIORITY, description="sources kept first when the budget is short")

    @field_validator("sections")
    @classmethod
    def _request_once(cls, sections: tuple[Section, ...]) -> tuple[Section, ...]:
        if sections.count("request") != 1 or len(set(sections)) != len(sections):
            raise ValueError("list each section at most once, and `request` exactly once")
        return sections


def load_template(path: Path) -> PromptTemplate:
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
        return PromptTemplate.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise TemplateError(f"{path}: {key}: {first['msg']}") from error
    except yaml.YAMLError as error:
        raise TemplateError(f"{path}: not valid YAML: {error}") from error


class TemplateSet:
    """Templates by route id (the file name without `.yaml`), with the default for routes without one."""

    def __init__(self, templates: dict[str, PromptTemplate]) -> None:
        if DEFAULT_TEMPLATE not in templates:
            raise TemplateError(f"no {DEFAULT_TEMPLATE}.yaml: every route without a template of its own needs it")
        self.templates = templates

    @classmethod
    def load(cls, directory: Path = TEMPLATES_DIR) -> TemplateSet:
        return cls({path.stem: load_template(path) for path in sorted(directory.glob("*.yaml"))})

    def for_route(self, route_id: str) -> PromptTemplate:
        return self.templates.get(route_id, self.templates[DEFAULT_TEMPLATE])


def _data(text: str) -> str:
    """Section content cannot open or close a section (or fake a chat turn)."""
    return text.replace("<", "\u2039").replace(">", "\u203a")  # single angle quotation marks


def _attribute(value: str) -> str:
    return _data(value).replace('"', "'")


def _section(name: str, items: Sequence[ContextItem]) -> str | None:
    if not items:
        return None
    if name == "inventory":
        body = "\n".join([INVENTORY_HEADER, *(_data(i.text) for i in items)])
    elif name == "knowledge_base":
        body = "\n".join(
            f'<passage id="{_attribute(i.source_id)}" score="{(i.score or 0.0):.3f}"'
            + (f' flags="{_attribute(",".join(i.flags))}"' if i.flags else "")
            + f">\n{_data(i.text)}\n</passage>"
            for i in items
        )
    else:
        body = "\n".join(_data(i.text) for i in items)
    return f"<{name}>\n{body}\n</{name}>"


def render(template: PromptTemplate, request_text: str, items: Sequence[ContextItem]) -> list[PromptMessage]:
    """The system message and a user message with the template's sections in order; empty sections left out."""
    parts: list[str] = []
    for name in template.sections:
        if name == "request":
            parts.append(f"<request>\n{_data(request_text)}\n</request>")
            continue
        source = SECTION_SOURCES[name]
        section = _section(name, [i for i in items if i.source == source])
        if section is not None:
            parts.append(section)
    return [
        PromptMessage(role="system", content=template.system.strip()),
        PromptMessage(role="user", content="\n\n".join(parts)),
    ]
