"""Chat data for fine-tuning: rows in several formats, rendered with the model's own chat template, masked for loss.

A row of a JSONL file is plain text or a conversation in one of three common formats (FORMATS). A conversation is
normalised to a list of {"role", "content"} messages (`to_messages`), rendered to text with the model's chat
template (`ChatTemplate`, the Jinja template of its Hugging Face folder, `read_chat_template`), and tokenized with a
supervision mask (`encode_messages`): the loss is computed only on the assistant's answers and the token that ends
each answer, since the prompts are given at inference time and learning them wastes capacity.

Rendering matches transformers' `apply_chat_template` character for character, because a model fine-tuned on
another rendering than the one it is prompted with at inference time learns the wrong format. transformers is not
imported here (the UI process imports this module): its Jinja environment is rebuilt below.

Which characters of a rendering are the assistant's? Templates do not say, so we ask them: the answer of turn i is
what rendering turns 0..i adds to rendering turns 0..i-1 with the generation prompt. Templates that mark answers
with `{% generation %}` blocks (as transformers' `return_assistant_tokens_mask` needs) say it themselves, and then
we take their word.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from studio.errors import StudioError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

FORMATS = ("text", "alpaca", "messages", "sharegpt")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "a list", dict: "an object"}

# For base models without a template: each turn is its role as a plain-text marker, a newline, the content, and
# eos_token, which the model learns to write after its answers so that generation stops. The generation prompt
# ends with a newline so that the answer's first token is tokenized the same way in training and at inference.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}:\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:\n{% endif %}"
)

# Older Jinja versions have known sandbox escapes, and a chat template is code from a downloaded folder.
MIN_JINJA_VERSION = (3, 1, 6)
# While spans are being recorded, `{% generation %}` blocks wrap their text in these two noncharacters (code points
# Unicode reserves for a program's internal use), which are then found and removed from the rendering.
GENERATION_OPEN, GENERATION_CLOSE = "\ufdd0", "\ufdd1"
GENERATION_MARKER = re.compile(f"[{GENERATION_OPEN}{GENERATION_CLOSE}]")
_marking_generation: ContextVar[bool] = ContextVar("marking_generation", default=False)
# A template is code from a downloaded folder, and a loop inside a loop can write without end (or loop without
# writing). A rendering may write its messages' text twice over plus RENDER_ALLOWANCE characters (the markers a
# template writes around turns) and take RENDER_SECONDS, checked at every piece of output and every turn of a loop.
RENDER_ALLOWANCE = 1 << 20
RENDER_SECONDS = 10.0
BOUNDED_LOOP = "__studio_bounded_loop"  # the global every {% for %} iterates through (`_bound_loops`)

Messages = Sequence[dict[str, str]]
Span = tuple[int, int]


# ---- formats ------------------------------------------------------------------------------------
def detect_format(record: dict, text_field: str, where: str) -> str:
    """The format of one row: the first of messages, sharegpt, alpaca and text whose keys it has."""
    if not isinstance(record, dict):
        raise StudioError(f"{where} is {_json_kind(record)}, not an object; each line must be an object")
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if text_field in record:
        return "text"
    fields = ", ".join(record) or "none"
    raise StudioError(
        f"{where} matches no data format (its fields: {fields}); give 'messages' (a list of role/content objects), "
        f"'conversations' (ShareGPT from/value objects), 'instruction' and 'output' (Alpaca), "
        f"or {text_field!r} (plain text; name another text field with --text-field)"
    )


def to_messages(record: dict, fmt: str, where: str) -> list[dict[str, str]]:
    """A conversation row as [{"role", "content"}, ...]: an optional system turn, then user and assistant turns
    alternating, ending with the assistant's. Anything else is a StudioError naming `where`."""
    if fmt == "alpaca":
        return _alpaca_messages(record, where)
    if fmt == "messages":
        return _listed_messages(record, "messages", "role", "content", dict(zip(ROLES, ROLES)), where)
    if fmt == "sharegpt":
        return _listed_messages(record, "conversations", "from", "value", SHAREGPT_ROLES, where)
    raise ValueError(f"to_messages takes a conversation format (alpaca, messages, sharegpt), not {fmt!r}")


def _alpaca_messages(record: dict, where: str) -> list[dict[str, str]]:
    """{"instruction", "input"?, "output", "system"?}: the input, when there is one, follows the instruction."""
    instruction = _text_field(record, "instruction", where, required=True)
    extra_input = _text_field(record, "input", where, required=False)
    output = _text_field(record, "output", where, required=True)
    system = _text_field(record, "system", where, required=False)
    user = f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _text_field(record: dict, key: str, where: str, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"{_json_kind(value)}, not a string"
        raise StudioError(f"{where}: {key!r} is {kind}; give it as a string")
    if required and not value.strip():
        raise StudioError(f"{where}: {key!r} is empty; fill it in or drop the row")
    return value


def _listed_messages(
    record: dict, key: str, role_key: str, content_key: str, roles: dict[str, str], where: str
) -> list[dict[str, str]]:
    """A list of turns under `key` (OpenAI messages or ShareGPT conversations), each mapped through `roles`."""
    turns = record.get(key)
    if not isinstance(turns, list):
        raise StudioError(f"{where}: {key!r} is {_json_kind(turns)}, not a list of turns; fix the row")
    messages = []
    for index, turn in enumerate(turns):
        at = f"{where}: {key}[{index}]"
        if not isinstance(turn, dict):
            raise StudioError(f"{at} is {_json_kind(turn)}, not an object with {role_key!r} and {content_key!r}")
        named_role = turn.get(role_key)
        if named_role is None:
            raise StudioError(f"{at} has no {role_key!r}; give one of {', '.join(roles)}")
        role = roles.get(named_role) if isinstance(named_role, str) else None  # a list is no role (nor hashable)
        if role is None:
            raise StudioError(f"{at} has {role_key} {named_role!r}; use one of {', '.join(roles)}")
        content = turn.get(content_key)
        if not isinstance(content, str):
            kind = "no" if content is None else f"{_json_kind(content)} as"
            raise StudioError(f"{at} ({role}) has {kind} {content_key!r}; give the turn's text as a string")
        if not content.strip():
            raise StudioError(f"{at} ({role}) is empty; fill it in or drop the turn")
        messages.append({"role": role, "content": content})  # other keys (name, weight, ...) are dropped
    _check_turn_order(messages, key, where)
    return messages


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words: a row's author wrote JSON, not Python."""
    if value is None:
        return "null"
    return JSON_KINDS.get(type(value), f"a {type(value).__name__}")


def _a(role: str) -> str:
    return f"an {role}" if role == "assistant" else f"a {role}"


def _check_turn_order(messages: list[dict[str, str]], key: str, where: str) -> None:
    """An optional system turn first, then user, assistant, user, ..., assistant."""
    if not messages:
        raise StudioError(f"{where}: {key!r} is empty; give at least a user turn and the assistant's answer")
    for index, message in enumerate(messages[1:], start=1):
        if message["role"] == "system":
            raise StudioError(f"{where}: {key}[{index}] is a system turn; only the first turn may be one")
    if not any(message["role"] == "assistant" for message in messages):
        raise StudioError(f"{where}: no assistant turn, so nothing would be learnt; add the answer or drop the row")
    first = 1 if messages[0]["role"] == "system" else 0
    for index in range(first, len(messages)):
        expected = "user" if (index - first) % 2 == 0 else "assistant"
        if messages[index]["role"] != expected:
            raise StudioError(
                f"{where}: {key}[{index}] is {_a(messages[index]['role'])} turn where {_a(expected)} turn belongs; "
                "turns must alternate user, assistant, user, ... after an optional system turn"
            )
    if messages[-1]["role"] != "assistant":
        raise StudioError(
            f"{where}: the conversation ends with a user turn, from which nothing is learnt "
            "(only the assistant's turns are); add the answer or drop that turn"
        )


# ---- the Jinja environment, as transformers builds it ----------------------------------------------
class _GenerationBlocks(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: text the model generates. Renders its body unchanged, or wrapped in
    GENERATION_OPEN/CLOSE while `_marking_generation` is set."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_block"), [], [], body).set_lineno(lineno)

    def _render_block(self, caller: jinja2.runtime.Macro) -> str:
        text = caller()
        return f"{GENERATION_OPEN}{text}{GENERATION_CLOSE}" if _marking_generation.get() else text


class _TemplateDict:
    """`dict` for templates: builds dictionaries, and exposes nothing a template could climb out of the sandbox by."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace()` for templates, refusing underscore names, which could reach Python's internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Namespace's own signature: namespace(self=1) works
        self, attributes = args[0], dict(*args[1:], **kwargs)
        for name in attributes:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with an underscore: {name!r}")


def _raise_exception(message: str) -> None:
    """Templates call raise_exception("...") on conversations they do not accept."""
    raise StudioError(f"the chat template refuses this conversation: {_one_line(str(message))}")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """Jinja's own tojson escapes <, >, & and ' for HTML; chat templates want plain JSON, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@dataclass
class _RenderBudget:
    """What one rendering may still write and until when it may run; `spend` refuses a runaway in one line."""

    template: str  # the template's name in messages
    max_chars: int
    deadline: float  # time.monotonic()
    written: int = 0

    def spend(self, chars: int) -> None:
        self.written += chars
        if self.written > self.max_chars:
            raise StudioError(
                f"{self.template} writes more than {self.max_chars:,} characters for one conversation (its messages "
                f"twice over plus {RENDER_ALLOWANCE:,}): a runaway loop; fix the template"
            )
        if time.monotonic() > self.deadline:
            raise StudioError(
                f"{self.template} takes more than {RENDER_SECONDS:g} s to render one conversation: a runaway loop; "
                "fix the template"
            )


_render_budget: ContextVar[_RenderBudget | None] = ContextVar("render_budget", default=None)


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    """What a template's {% for %} iterates: its iterable, item by item, each turn checked against the budget."""
    budget = _render_budget.get()  # set by ChatTemplate._render, the one place templates are rendered
    for item in iterable:
        budget.spend(0)
        yield item


def _bound_loops(template: jinja2.nodes.Template) -> jinja2.nodes.Template:
    """The parsed template with every loop's iterable passed through `_bounded_loop`, so that loops which write
    nothing are bounded in time too."""
    for loop in template.find_all(jinja2.nodes.For):
        bounded = jinja2.nodes.Name(BOUNDED_LOOP, "load").set_lineno(loop.iter.lineno)
        loop.iter = jinja2.nodes.Call(bounded, [loop.iter], [], None, None).set_lineno(loop.iter.lineno)
    return template


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    """The sandbox templates run in: trim_blocks and lstrip_blocks, loop controls, generation blocks, and the
    globals and filters Hugging Face templates rely on."""
    version = tuple(int(part) for part in re.findall(r"\d+", jinja2.__version__)[:3])
    if version < MIN_JINJA_VERSION:
        raise StudioError(
            f"jinja2 {jinja2.__version__} is too old to run chat templates safely (it has sandbox escapes); "
            "upgrade it with pip install -U 'jinja2>=3.1.6'"
        )
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlocks, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(), namespace=_TemplateNamespace
    )
    environment.globals[BOUNDED_LOOP] = _bounded_loop
    return environment


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- chat templates -----------------------------------------------------------------------------
class ChatTemplate:
    """A chat template compiled once: renders conversations and finds the assistant's answers in them."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", name: str = "the chat template"):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name  # where it comes from, for messages: "the chat template of DIR"
        environment = _environment()
        try:
            parsed = environment.parse(source)
            self._has_generation_blocks = any(
                isinstance(block.call.node, jinja2.nodes.ExtensionAttribute)
                and block.call.node.identifier == _GenerationBlocks.identifier
                for block in parsed.find_all(jinja2.nodes.CallBlock)
            )
            self._template = environment.from_string(_bound_loops(parsed))
        except jinja2.TemplateSyntaxError as error:
            raise StudioError(
                f"the chat template does not compile: {_one_line(error.message or str(error))} (line {error.lineno}); "
                "fix the template"
            ) from None

    @property
    def has_generation_blocks(self) -> bool:
        """Whether the template marks the assistant's text with {% generation %} blocks."""
        return self._has_generation_blocks

    def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """The conversation as the model reads it; with add_generation_prompt, followed by what starts its answer."""
        return self._render(messages, add_generation_prompt, mark_generation=False)

    def supervised_spans(self, messages: Messages) -> tuple[str, list[Span]]:
        """The rendering and the character spans [start, end) to learn: each assistant answer and its end marker."""
        rendering = self.render(messages)
        if self._has_generation_blocks:
            return rendering, self._generation_spans(messages, rendering)
        return rendering, self._answer_spans(messages, rendering)

    def _render(self, messages: Messages, add_generation_prompt: bool, mark_generation: bool) -> str:
        marking = _marking_generation.set(mark_generation)
        message_chars = sum(len(message["content"]) for message in messages)
        budget = _RenderBudget(self.name, 2 * message_chars + RENDER_ALLOWANCE, time.monotonic() + RENDER_SECONDS)
        budgeting = _render_budget.set(budget)
        try:
            pieces = []
            for piece in self._template.generate(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=None,  # transformers passes these two, and templates test them
                documents=None,
            ):
                budget.spend(len(piece))
                pieces.append(piece)
            return "".join(pieces)
        except StudioError:
            raise
        except Exception as error:  # a template is code from the model's folder: whatever it raises is its problem
            raise StudioError(
                f"the chat template fails on this conversation ({type(error).__name__}: {_one_line(str(error))}); "
                "fix the template or the row"
            ) from None
        finally:
            _render_budget.reset(budgeting)
            _marking_generation.reset(marking)

    def _generation_spans(self, messages: Messages, rendering: str) -> list[Span]:
        """Where the {% generation %} blocks' text lies in the rendering: render once with the blocks' text between
        markers, then remove the markers, noting where each outermost block began and ended."""
        marked = self._render(messages, add_generation_prompt=False, mark_generation=True)
        pieces, spans = [], []
        depth = length = opened_at = cursor = 0
        for marker in GENERATION_MARKER.finditer(marked):
            pieces.append(marked[cursor : marker.start()])
            length += marker.start() - cursor
            cursor = marker.end()
            if marker.group() == GENERATION_OPEN:
                opened_at = length if depth == 0 else opened_at
                depth += 1
                continue
            depth -= 1
            if depth < 0:
                break
            if depth == 0 and length > opened_at:
                spans.append((opened_at, length))
        pieces.append(marked[cursor:])
        if depth != 0 or "".join(pieces) != rendering:
            # the blocks' text was reshaped after rendering (captured and trimmed, say), or a message itself holds
            # one of the marker characters
            raise StudioError(
                "cannot locate the chat template's {% generation %} blocks in its rendering; "
                "keep the blocks out of {% set %} captures and filters, or remove them from the template"
            )
        return spans

    def _answer_spans(self, messages: Messages, rendering: str) -> list[Span]:
        """Each assistant answer: what rendering the turns up to it adds to the turns before it plus the generation
        prompt, less trailing whitespace (the newline after Qwen's <|im_end|> is the template's, not the answer's)."""
        closing = self._closing_text(messages)
        spans = []
        for index, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            prompt = self.render(messages[:index], add_generation_prompt=True)
            with_answer = self.render(messages[: index + 1])
            if not with_answer.startswith(prompt):
                raise StudioError(
                    f"the chat template renders the prompt of the assistant's turn {index + 1} differently once the "
                    "answer follows, so the answer cannot be located; add {% generation %} blocks to the template"
                )
            answer = with_answer[len(prompt) :]
            if closing and answer.endswith(closing):
                answer = answer[: -len(closing)]
            if not rendering.startswith(prompt + answer):
                raise StudioError(
                    f"the chat template renders the assistant's turn {index + 1} differently once later turns "
                    "follow, so the answer cannot be located; add {% generation %} blocks to the template"
                )
            answer = answer.rstrip()
            if answer:
                spans.append((len(prompt), len(prompt) + len(answer)))
        return spans

    def _closing_text(self, messages: Messages) -> str:
        """What the template writes after the last turn when no generation prompt follows it, if anything: Phi-3
        ends such a conversation with eos_token (its turns end with <|end|>), which belongs to no turn."""
        first_answer = next((i for i, message in enumerate(messages) if message.get("role") == "assistant"), None)
        if not first_answer or not self.eos_token:  # no turn before the first answer, or no eos to look for
            return ""
        without_prompt = self.render(messages[:first_answer])
        with_prompt = self.render(messages[:first_answer], add_generation_prompt=True)
        if with_prompt.startswith(without_prompt):
            return ""
        closed = without_prompt.rstrip()
        opened_at = len(closed) - len(self.eos_token)
        if closed.endswith(self.eos_token) and with_prompt.startswith(without_prompt[:opened_at]):
            return without_prompt[opened_at:]
        return ""


def read_chat_template(folder: Path) -> str | None:
    """A Hugging Face folder's chat template: chat_template.jinja, else tokenizer_config.json's "chat_template" (a
    string, or a list of named templates of which we take "default"); None when the folder has none."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return jinja_file.read_text(encoding="utf-8") or None
        except (OSError, UnicodeDecodeError) as error:
            raise StudioError(f"cannot read {jinja_file}: {error}") from None
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StudioError(f"cannot read {config_file}: {_one_line(str(error))}") from None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if template is None or isinstance(template, str):
        return template or None
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        names = ", ".join(str(name) for name in named) or "none"
        raise StudioError(
            f"{config_file} has chat templates named {names} but none named 'default'; "
            "name the one to train with 'default'"
        )
    raise StudioError(
        f"{config_file}: chat_template is {_json_kind(template)}, not a string or a list of named templates; "
        "fix the file"
    )


# ---- tokens and their supervision mask -------------------------------------------------------------
def encode_messages(
    tokenizer: Tokenizer, template: ChatTemplate, messages: Messages, supervise_all: bool = False
) -> tuple[list[int], list[int]]:
    """The rendered conversation's token ids and a 0/1 mask per token: 1 on the tokens to learn (every token with
    supervise_all). Templates write their own BOS, so the tokenizer adds no special tokens."""
    if supervise_all:
        ids = tokenizer.encode(template.render(messages), add_special_tokens=False).ids
        return ids, [1] * len(ids)
    rendering, spans = template.supervised_spans(messages)
    encoding = tokenizer.encode(rendering, add_special_tokens=False)
    mask = _supervision_mask(encoding.offsets, spans)
    if not any(mask):
        raise StudioError(
            "the chat template renders no assistant answer here, so nothing would be learnt; "
            "check that the template writes the assistant's turns"
        )
    return encoding.ids, mask


def _supervision_mask(offsets: Sequence[Span], spans: Sequence[Span]) -> list[int]:
    """1 for each token whose characters [start, end) overlap a span. A token with no characters of its own (a
    space that byte-level offsets trim away, at the position after it) counts only strictly inside a span, and a
    (0, 0) token never: the same rule as transformers' assistant masks. Pieces of one character (bytes of an emoji)
    share its offsets, so they all count or none does."""
    spans = sorted(spans)
    starts = [start for start, _ in spans]
    mask = []
    for token_start, token_end in offsets:
        at = bisect.bisect_right(starts, token_start) - 1  # the last span starting at or before the token
        in_span_before = at >= 0 and token_start < spans[at][1] and token_end > spans[at][0]
        into_span_after = at + 1 < len(spans) and token_end > spans[at + 1][0]
        mask.append(int(in_span_before or into_span_after))
    return mask


def encode_text(tokenizer: Tokenizer, text: str, eos_id: int) -> tuple[list[int], list[int]]:
    """Plain text for continued pretraining: its ids and eos, every token learnt."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids + [eos_id]
    return ids, [1] * len(ids)
