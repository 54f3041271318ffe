"""Prompt-injection and jailbreak patterns: the phrasing attacks share ("ignore previous instructions", role-play
escapes, fake system turns, hidden markup). These catch the known forms with certainty; the trained classifier
(services.governor.classifiers.INJECTION) catches paraphrases. A text is flagged when either fires."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

INJECTION_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (name, re.compile(pattern, re.I))
    for name, pattern in (
        (
            "override_instructions",
            r"\b(ignore|disregard|forget|override|bypass)\b[^.?!]{0,40}\b(previous|prior|above|earlier|all|your|the)"
            r"\b[^.?!]{0,20}\b(instructions?|rules|guidance|prompt|policy|policies|guardrails|restrictions|filters?)\b",
        ),
        (
            "reveal_prompt",
            r"\b(system prompt|hidden instructions|initial prompt|context window)\b"
            r"|\b(print|reveal|repeat|dump|show me|output) (me )?(your|the) "
            r"(instructions|configuration|rules|contents)\b",
        ),
        ("fake_turn", r"(^|\s|[>\]])(system|assistant)\s*:|</?(system|assistant|instruction|user)>|###\s*(system|new)"),
        (
            "role_escape",
            r"\b(you are now|you are no longer|from now on you|act as my|pretend (to be|you are)|role-?play as|"
            r"let's role-?play|play a game where you)\b"
            r"|\b(enter|enable|activate|switch to|in) (developer|debug|god|jailbreak) mode\b|\bjailbreak\b"
            r"|\bDAN\b|\bdo anything now\b|\b(no|without) (restrictions|rules|limits|policies|guardrails)\b",
        ),
        (
            "addressed_to_model",
            r"\b(to any|note to the|note to|if you are an?|attention)\s*"
            r"(ai|a\.i\.|chatbot|assistant|language model|llm)"
            r"|\b(ai|a\.i\.) assistants? (reading|must)\b",
        ),
        (
            "forced_output",
            r"\b(respond|reply|answer|output) only with\b|\brepeat after me\b|\bignore the above\b"
            r"|\b(override|disable|turn off) (the )?(safety|content|discount)\b|\bdisregard the \d+% limit\b",
        ),
        # the same attacks in Spanish, French, German, Portuguese, Italian and Dutch (an English-only list let
        # "Ignora las instrucciones anteriores…" through): discard the rules, take on a role, show the prompt
        (
            "override_instructions_multilingual",
            r"\b(ignora|ignore[sz]?|ignorez|ignoriere|ignorieren|olvida|olvide|omite|oublie[sz]?|vergiss|vergessen"
            r"|esque[çc]a|esquece|dimentica|dimenticate|negeer|vergeet)\b[^.?!]{0,40}"
            r"\b(instrucciones|instruccion|reglas|normas|indicaciones|consignes|r[èe]gles|anweisungen|regeln"
            r"|vorgaben|instru[çc][õo]es|regras|istruzioni|regole|instructies|regels|opdrachten)\b",
        ),
        (
            "role_escape_multilingual",
            r"\b(a partir de ahora|ahora eres|act[úu]a como|tu es maintenant|vous [êe]tes maintenant|agis comme"
            r"|du bist (jetzt|ab jetzt|nun)|ab jetzt bist du|handle als|a partir de agora|aja como|finja ser"
            r"|da ora in poi|ora sei|agisci come|fingi di essere|je bent nu|vanaf nu ben je|gedraag je als)\b"
            r"|\b(sin|sans|ohne|sem|senza|zonder) (aucune |ninguna |alcuna |qualquer )?(restricci[oó]n(es)?"
            r"|restrictions?|einschr[äa]nkungen|regeln|filtros|filtri|restri[çc][õo]es|limites|limiti|restrizioni"
            r"|beperkingen|regels)\b",
        ),
        (
            "reveal_prompt_multilingual",
            r"\b(prompt|mensaje|message|mensagem|messaggio) (de |do |di |del )?(sistema|syst[èe]me)\b"
            r"|\bsyste(m|em)-?prompts?\b|\bsystemanweisungen\b",
        ),
        (
            "addressed_to_model_multilingual",
            r"\b(instrucci[oó]n|nota|aviso|hinweis|anweisung|remarque|consigne|opmerking) (para|an|à|per|voor)"
            r" (el |la |die |den |l'|o |a |de )?(asistente|assistant|assistent|assistente|ki|ia|ai)\b"
            r"|\bassistant ia\b",
        ),
        ("system_override", r"\bsystem override\b"),
        (
            "authority_claim",
            r"\b(i am|i'm) (your|the) (developer|creator|admin|administrator)\b|\bnew (rule|instructions?) from\b",
        ),
    )
)
INVISIBLE: Final = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff]")
# an HTML comment, found from the first `<!--` only (atomic group): a later one is closed by any `-->` that closes
# the first, and re-scanning the rest of the text from every unclosed `<!--` made the search quadratic
HIDDEN_MARKUP: Final = re.compile(r"\A(?>.*?<!--).*?-->", re.S)


def injection_signals(text: str) -> list[str]:
    """The names of the patterns the text matches, plus `invisible_characters` and `hidden_markup` when the text
    hides content from a human reader."""
    normalised = unicodedata.normalize("NFKC", INVISIBLE.sub("", text))
    signals = [name for name, pattern in INJECTION_PATTERNS if pattern.search(normalised)]
    if INVISIBLE.search(text):
        signals.append("invisible_characters")
    if HIDDEN_MARKUP.search(text):
        signals.append("hidden_markup")
    return signals
