"""The export's last line of defence against raw PII: whatever the governor tokenised stays tokenised, and any
e-mail address, phone number or payment card number still left in a text is replaced before it is written."""

from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 7+ digits with separators, not inside a longer token; card numbers (13-19 digits) are caught by the same run
PHONE_OR_CARD = re.compile(r"(?<![\w+<])\+?\d[\d\s().-]{5,}\d(?![\w>])")


def scrub(text: str) -> tuple[str, int]:
    """The text with residual PII replaced by <EMAIL>/<NUMBER>, and how many spans were replaced."""
    text, emails = EMAIL.subn("<EMAIL>", text)
    replaced = 0

    def number(match: re.Match[str]) -> str:
        nonlocal replaced
        if sum(c.isdigit() for c in match.group(0)) < 7:
            return match.group(0)
        replaced += 1
        return "<NUMBER>"

    text = PHONE_OR_CARD.sub(number, text)
    return text, emails + replaced
