"""How a generated answer is compared with its reference, as the field scores them. Torch-free.

- `normalized`: SQuAD's normalisation (lower case, no punctuation, no articles, single spaces), which exact match
  and token F1 compare after;
- `extracted`: the answer a pattern picks from a longer text, its last match (the final answer comes last, as GSM8K's
  scoring takes it); `last-number` is GSM8K's flexible pattern, the last number with its sign, commas and point;
- `token_f1`: the harmonic mean of precision and recall over the normalised words both share (SQuAD's F1);
- `rouge_l`: the same over the longest common subsequence of normalised words (ROUGE-L's F-measure, β = 1).
"""

from __future__ import annotations

import re
import string
from collections import Counter

from studio.errors import StudioError

LAST_NUMBER = r"-?[$0-9.,]{2,}|-?[0-9]+"  # lm-evaluation-harness's gsm8k flexible-extract
ARTICLES = re.compile(r"\b(a|an|the)\b")


def extraction_pattern(extract: str | None) -> re.Pattern | None:
    """`--extract`: None, `last-number`, or a regex (its first group, if it has one, is the answer)."""
    if extract is None:
        return None
    try:
        return re.compile(LAST_NUMBER if extract == "last-number" else extract)
    except re.error as error:
        raise StudioError(
            f"--extract {extract!r} is not a regular expression ({error}); e.g. 'answer: (\\w+)'"
        ) from None


def extracted(text: str, pattern: re.Pattern | None) -> str:
    """The pattern's last match in the text (its first group when it has one); the text whole without a pattern
    or a match, so an answer that never states one is compared as written (and rarely matches)."""
    if pattern is None:
        return text
    matches = list(pattern.finditer(text))
    if not matches:
        return text
    last = matches[-1]
    answer = last.group(1) if pattern.groups and last.group(1) is not None else last.group(0)
    return answer.strip().rstrip(".").replace(",", "").lstrip("$") if pattern.pattern == LAST_NUMBER else answer


def normalized(text: str) -> str:
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(answer: str, reference: str) -> float:
    return float(normalized(answer) == normalized(reference))


def token_f1(answer: str, reference: str) -> float:
    said, wanted = normalized(answer).split(), normalized(reference).split()
    if not said or not wanted:
        return float(said == wanted)
    shared = sum((Counter(said) & Counter(wanted)).values())
    if not shared:
        return 0.0
    precision, recall = shared / len(said), shared / len(wanted)
    return 2 * precision * recall / (precision + recall)


def rouge_l(answer: str, reference: str) -> float:
    said, wanted = normalized(answer).split(), normalized(reference).split()
    if not said or not wanted:
        return float(said == wanted)
    longest = [0] * (len(wanted) + 1)  # the LCS of said[:i] and wanted[:j], one row at a time
    for word in said:
        diagonal = 0
        for j, other in enumerate(wanted, start=1):
            diagonal, longest[j] = longest[j], diagonal + 1 if word == other else max(longest[j], longest[j - 1])
    shared = longest[-1]
    if not shared:
        return 0.0
    precision, recall = shared / len(said), shared / len(wanted)
    return 2 * precision * recall / (precision + recall)
