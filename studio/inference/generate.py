"""Sampling text from a model: temperature, top-k, top-p, repetition penalty; a KV cache; streaming text.

`decode_steps` is the loop everything uses (the trainer's samples, `llm-studio generate`, the playground's
worker): it yields one token per sequence per step. The decoders keep a preallocated KV cache, so a step
feeds one token, not the whole context; once the context is full the window slides (a full forward per
step, as without a cache). The recurrent models recompute the window every step. A transformers model also
decodes prompts of several lengths in one batch, left-padded (`left_padded`; GRPO samples a step's prompts so).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from studio.data.chat import ChatTemplate
from studio.data.examples import dataset_chat_template
from studio.data.labeled import encode_labeled
from studio.data.prepare import Dataset
from studio.errors import StudioError
from studio.inference.load import LoadedModel, load_model

ANSWER_BATCH = 8  # prompts answered at once by greedy_answers (same-length ones share a batch)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0: greedy
    top_k: int = 50  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off

    def check(self) -> None:
        """A StudioError naming the first value out of range."""
        if self.max_new_tokens <= 0:
            raise StudioError(f"max_new_tokens must be positive, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise StudioError(f"temperature must be 0 (greedy) or more, not {self.temperature}")
        if self.top_k < 0:
            raise StudioError(f"top_k must be 0 (off) or positive, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise StudioError(f"top_p must be in (0, 1] (1: off), not {self.top_p}")
        if self.repetition_penalty <= 0:
            raise StudioError(f"repetition_penalty must be positive (1: off), not {self.repetition_penalty}")


def next_token_distribution(logits: torch.Tensor, history: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Probabilities over the vocabulary (B, V) from the last position's logits (B, V)."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0:  # CTRL's rule: make tokens already present less likely
        seen = torch.gather(logits, 1, history)
        seen = torch.where(seen > 0, seen / sampling.repetition_penalty, seen * sampling.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:  # nucleus: keep the smallest set of tokens whose mass reaches top_p
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def pick(
    logits: torch.Tensor, history: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """The next token of every row (B,) from the last position's logits (B, V)."""
    if sampling.temperature == 0:
        if sampling.repetition_penalty == 1.0:
            return logits.argmax(-1)
        return next_token_distribution(
            logits, history, SamplingConfig(temperature=1.0, top_k=0, repetition_penalty=sampling.repetition_penalty)
        ).argmax(-1)
    probs = next_token_distribution(logits, history, sampling)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


@torch.inference_mode()
def decode_steps(
    model: torch.nn.Module,
    ids: torch.Tensor,
    block_size: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    stop_ids: list[int] | None = None,
    use_cache: bool = True,
    pads: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sequence in `ids` (B, T) (a (B,) tensor) per step, up to
    max_new_tokens steps; stop early once every row has produced one of stop_ids (finished rows repeat it).

    `pads` (B,): how many of each row's first ids are left padding (`left_padded`), for a model that `takes_padding`
    (a transformers model: an attention mask hides the padding, and each row's positions start after it). Prompts of
    several lengths then decode in one batch, with a cache; prompt and answer must fit in the context (no sliding)."""
    stops = torch.tensor(stop_ids or [], dtype=ids.dtype, device=ids.device)
    B, T = ids.shape
    tokens = torch.empty(B, T + sampling.max_new_tokens, dtype=ids.dtype, device=ids.device)
    tokens[:, :T] = ids
    cached = use_cache and hasattr(model, "new_cache")
    padding = {} if pads is None else padding_inputs(model, pads, T + sampling.max_new_tokens, block_size, cached)
    cache, filled = None, 0  # filled: positions of the current window whose keys and values are stored
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    for step in range(sampling.max_new_tokens):
        end = T + step
        if cached and cache is not None and filled < cache.max_len:
            logits, _ = model(tokens[:, end - 1 : end], cache=cache, start=filled, **fed(padding, end - 1, end))
            filled += 1
        else:  # no cache, a first step, or a full context sliding on: the window whole (as without a cache)
            window = tokens[:, max(0, end - block_size) : end]
            if cached:
                if cache is None:  # sized for this generation, not the whole context a model may allow
                    cache = model.new_cache(B, min(block_size, T + sampling.max_new_tokens))
                filled = window.size(1)
            logits, _ = model(window, cache=cache, **fed(padding, 0, end)) if cached else model(window)
        token = pick(logits[:, -1, :], tokens[:, :end], sampling, generator)
        if len(stops):
            token = torch.where(finished, tokens[:, end - 1], token)  # a finished row repeats its stop token
            finished |= torch.isin(token, stops)
        tokens[:, end] = token
        yield token
        if len(stops) and bool(finished.all()):
            return


def left_padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of several lengths as one batch (B, longest), each right-aligned, and how many of each row's first ids
    are padding (B,). The padding repeats the row's first token: hidden by the attention mask, and the repetition
    penalty, which looks at every id of a row, then sees only tokens the prompt holds."""
    longest = max(len(prompt) for prompt in prompts)
    ids = torch.stack([torch.cat([prompt[:1].expand(longest - len(prompt)), prompt]) for prompt in prompts])
    return ids, torch.tensor([longest - len(prompt) for prompt in prompts], device=ids.device)


def padding_inputs(model, pads: torch.Tensor, length: int, block_size: int, cached: bool) -> dict[str, torch.Tensor]:
    """For left-padded rows of `length` positions (prompt and answer): the attention mask (1 but at the padding) and
    the positions (counted from each row's first real token), which decode_steps hands the model a part at a time."""
    if not (getattr(model, "takes_padding", False) and cached and length <= block_size):
        raise ValueError("left-padded prompts need a model that takes padding, a cache and room for the answers")
    columns = torch.arange(length, device=pads.device)
    return {
        "attention_mask": (columns >= pads[:, None]).long(),
        "positions": (columns - pads[:, None]).clamp(min=0),
    }


def fed(padding: dict[str, torch.Tensor], begin: int, end: int) -> dict[str, torch.Tensor]:
    """What the model is handed of `padding_inputs` with positions begin to end: the mask over every position up to
    end (the cache's and theirs), their positions; nothing without padding (a window never slides with it)."""
    if not padding:
        return {}
    return {"attention_mask": padding["attention_mask"][:, :end], "positions": padding["positions"][:, begin:end]}


def stopped_length(tokens: list[int], stop_ids: list[int]) -> int:
    """The tokens of a sampled continuation up to and including its first stop token (a finished row repeats it)."""
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return index + 1
    return len(tokens)


def sample(
    model: torch.nn.Module,
    ids: torch.Tensor,
    block_size: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    stop_ids: list[int] | None = None,
    pads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Extend `ids` (B, T) (left-padded by `pads`, as decode_steps takes them) by up to max_new_tokens tokens;
    returns only the new tokens (B, N)."""
    steps = list(decode_steps(model, ids, block_size, sampling, generator, stop_ids, pads=pads))
    return torch.stack(steps, dim=1) if steps else ids[:, :0]


# ---- an encoder's fill-mask ------------------------------------------------------------------------------
@torch.inference_mode()
def fill_masks(
    model: torch.nn.Module, tokenizer: Tokenizer, text: str, mask_id: int, block_size: int, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each [MASK] of text (framed as [CLS] text [SEP]), its top_k fills with their probabilities."""
    ids = tokenizer.encode(text).ids
    positions = [index for index, token in enumerate(ids) if token == mask_id]
    if not positions:
        raise StudioError(f"{text!r} has no [MASK]; write [MASK] where a token is to be filled in")
    if len(ids) > block_size:
        raise StudioError(f"the text is {len(ids)} tokens long, more than the model's context of {block_size}")
    device = next(model.parameters()).device
    logits, _ = model(torch.tensor([ids], device=device))
    top = logits[0, positions].float().softmax(-1).topk(top_k)
    return [
        [(tokenizer.decode([token], skip_special_tokens=False), round(p, 4)) for token, p in zip(idx, probs)]
        for probs, idx in zip(top.values.tolist(), top.indices.tolist())
    ]


def fills_text(fills: list[list[tuple[str, float]]]) -> str:
    """Fills as one line: per [MASK], its candidates with their probabilities; masks separated by |."""
    return " | ".join(" · ".join(f"{token!r} {p:.0%}" for token, p in candidates) for candidates in fills)


# ---- a classifier's labels ----------------------------------------------------------------------------------
@torch.inference_mode()
def classify_text(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    text: str,
    labels: list,
    framed: bool,
    block_size: int,
    pair: str | None = None,
) -> list[tuple[str, float]]:
    """Every label with its probability for text (and pair), likeliest first; the text is encoded as the
    classification dataset's rows were (`framed`: the tokenizer adds the model's special tokens)."""
    return label_probabilities(model, encode_labeled(tokenizer, text, pair, framed)[:block_size], labels)


@torch.inference_mode()
def label_probabilities(model: torch.nn.Module, ids: list[int], labels: list) -> list[tuple[str, float]]:
    """Every label with its probability for an encoded text, likeliest first."""
    device = next(model.parameters()).device
    logits, _ = model(torch.tensor([ids], device=device), lengths=torch.tensor([len(ids)], device=device))
    probabilities = logits[0].float().softmax(-1).tolist()
    return sorted(zip(map(str, labels), probabilities), key=lambda item: -item[1])


# ---- text in, text out ----------------------------------------------------------------------------------
class TextStream:
    """Turns tokens into text deltas as they come. Decoding the whole list each time keeps multi-token
    characters (a byte-level BPE splits emoji) whole: a trailing partial character waits for its rest."""

    def __init__(self, tokenizer: Tokenizer, ids: list[int] | None = None):
        self.tokenizer = tokenizer
        self.ids = [] if ids is None else ids  # a caller's list, to read the tokens back (a look at them afterwards)
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        delta, self.text = text[len(self.text) :], text
        return delta


@dataclass
class Generator:
    """A model ready to generate, with what decoding needs around it."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    eot_id: int | None
    block_size: int
    description: str  # what was loaded, e.g. "run r1, step 500"
    note: str | None = None  # when a damaged latest checkpoint was passed over: which, and why
    stop_ids: list[int] = field(default_factory=list)  # what ends a text: eot, and the chat template's end of turn
    chat_template: ChatTemplate | None = None  # the one it was trained with, or its folder's
    chat_default: bool = False  # trained on chat data (or a folder with a template): --chat unless told otherwise

    def __post_init__(self) -> None:
        if self.eot_id is not None and self.eot_id not in self.stop_ids:
            self.stop_ids = sorted({*self.stop_ids, self.eot_id})

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """A conversation so far, rendered with the chat template up to where the assistant answers."""
        if self.chat_template is None:
            raise StudioError(f"{self.description} has no chat template; generate without --chat")
        return self.chat_template.render(messages, add_generation_prompt=True)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: str) -> list[int]:
        """The prompt's ids (the end-of-text token for an empty prompt); refuses one longer than the context."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        if not ids:
            ids = [self.eot_id if self.eot_id is not None else 0]
        if len(ids) > self.block_size:
            raise StudioError(
                f"the prompt is {len(ids)} tokens long, more than the model's context of "
                f"{self.block_size} tokens; shorten it"
            )
        return ids

    def answer(self, prompt: str, sampling: SamplingConfig, seed: int | None) -> tuple[list[int], list[int]]:
        """The prompt's ids and its continuation's (up to a stop token): what a look inside is about."""
        sampling.check()
        ids = self.encode(prompt)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        new: list[int] = []
        prompt_ids = torch.tensor([ids], device=self.device)
        for token in decode_steps(self.model, prompt_ids, self.block_size, sampling, generator, self.stop_ids):
            if int(token[0]) in self.stop_ids:
                break
            new.append(int(token[0]))
        return ids, new

    def looked(self, prompt: str, sampling: SamplingConfig, seed: int | None, k: int) -> tuple[str, list[TokenLook]]:
        """The prompt's continuation, and a look at each of its tokens (`token_looks`)."""
        ids, new = self.answer(prompt, sampling, seed)
        return self.tokenizer.decode(new), token_looks(self.model, self.tokenizer, ids, new, k, self.block_size)

    def greedy_answers(
        self, prompts: list[list[int]], max_new_tokens: int, cut_at_blank_line: bool = False, report=None
    ) -> list[str]:
        """Each prompt's greedy answer (up to a stop token), a few prompts at a time, `report(done, total)` after
        each few; cut at its first blank line when asked (a plain prompt's answer goes on with the next question
        otherwise)."""
        answers = [""] * len(prompts)
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        for first in range(0, len(prompts), ANSWER_BATCH):
            chunk = prompts[first : first + ANSWER_BATCH]
            for index, delta in self.stream_ids(chunk, sampling):
                if delta is not None:
                    answers[first + index] += delta
            if report is not None:
                report(min(first + ANSWER_BATCH, len(prompts)), len(prompts))
        if cut_at_blank_line:
            answers = [answer.split("\n\n")[0] for answer in answers]
        return [answer.strip() for answer in answers]

    def stream(
        self,
        prompts: list[str],
        sampling: SamplingConfig,
        seed: int | None = None,
    ) -> Iterator[tuple[int, str | None]]:
        """Yield (prompt index, text delta) as tokens come, and (index, None) when a prompt is done.

        Prompts of the same length in tokens run as one batch, so each row sees exactly what it would
        alone (no padding); under greedy decoding a prompt's text is the same batched or alone."""
        sampling.check()  # checked here, before the first token is asked for: errors come before any output
        encoded = [self.encode(prompt) for prompt in prompts]
        return self.stream_ids(encoded, sampling, seed)

    def stream_ids(
        self,
        encoded: list[list[int]],
        sampling: SamplingConfig,
        seed: int | None = None,
        answer_ids: list[list[int]] | None = None,
    ) -> Iterator[tuple[int, str | None]]:
        """`stream` of prompts already tokenized (a chat example's rendered conversation, say); `answer_ids`, one
        empty list per prompt when given, receives each prompt's generated ids as they come (no stop token)."""
        groups: dict[int, list[int]] = {}
        for index, ids in enumerate(encoded):
            groups.setdefault(len(ids), []).append(index)
        for indices in groups.values():
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            ids = torch.tensor([encoded[i] for i in indices], device=self.device)
            streams = [TextStream(self.tokenizer, answer_ids[index] if answer_ids else None) for index in indices]
            done = [False] * len(indices)
            for token in decode_steps(self.model, ids, self.block_size, sampling, generator, self.stop_ids):
                for row, token_id in enumerate(token.tolist()):
                    if done[row]:
                        continue
                    if token_id in self.stop_ids:
                        done[row] = True
                        yield indices[row], None
                        continue
                    delta = streams[row].push(token_id)
                    if delta:
                        yield indices[row], delta
            for row, index in enumerate(indices):
                if not done[row]:
                    yield index, None


@dataclass(frozen=True)
class TokenLook:
    """A generated token as the model saw it: its probability under the model's own distribution (softmax of its
    logits, before any sampling setting), the distribution's entropy, and the likeliest tokens there."""

    token_id: int
    text: str
    probability: float
    entropy: float  # in nats: 0 when the model is sure, ln(vocabulary) at its most unsure
    alternatives: list[tuple[str, float]]  # the top k, likeliest first (the token itself when it is among them)


@torch.inference_mode()
def token_looks(
    model: torch.nn.Module, tokenizer: Tokenizer, prompt: list[int], new: list[int], k: int, block_size: int
) -> list[TokenLook]:
    """Each new token's look, from one forward over prompt and answer up to the context's length (a window of the
    context per token past it, as generation slid)."""
    device = next(model.parameters()).device
    full = torch.tensor([prompt + new], device=device)
    seen_whole = min(full.size(1) - 1, block_size)  # the positions whose tokens saw everything before them
    logits = model(full[:, :seen_whole])[0][0, len(prompt) - 1 :]
    slid = [model(full[:, end - block_size : end])[0][0, -1:] for end in range(seen_whole + 1, full.size(1))]
    logits = torch.cat([logits, *slid])
    looks = []
    for token, row in zip(new, logits.float().log_softmax(-1)):
        probabilities = row.exp()
        top = torch.topk(probabilities, min(k, row.numel()))
        looks.append(TokenLook(
            token, tokenizer.decode([token]), probabilities[token].item(), -(probabilities * row).nansum().item(),
            [(tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())],
        ))  # fmt: skip
    return looks


class Rate:
    """Tokens per second since the first token (the prompt's prefill is not a generated token)."""

    def __init__(self):
        self.started = time.perf_counter()
        self.tokens = 0

    def tick(self) -> float:
        self.tokens += 1
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)


# ---- loading --------------------------------------------------------------------------------------------
def run_generator(
    model: torch.nn.Module, tokenizer: Tokenizer, dataset: Dataset, block_size: int, description: str
) -> Generator:
    """A model being trained, ready to generate as its dataset frames text: its end of text, and on chat data its
    template and end-of-turn ids (the trainer's eval tasks)."""
    return Generator(
        model, tokenizer, dataset.eot_id, block_size, description,
        stop_ids=dataset.meta.stop_ids, chat_template=dataset_chat_template(dataset.meta),
        chat_default=dataset.has_examples,
    )  # fmt: skip


def load_generator(target: str, step: int | None = None, device: str = "cpu") -> Generator:
    """A causal LM ready to generate: a run's checkpoint or a Hugging Face folder (studio.inference.load)."""
    return generator_of(load_model(target, step, device, use="generate"))


def generator_of(loaded: LoadedModel) -> Generator:
    """A loaded causal LM as a Generator."""
    return Generator(
        loaded.model,
        loaded.tokenizer,
        loaded.eot_id,
        getattr(loaded.model, "block_size", loaded.context),  # a transformers model may go on to all it was made for
        loaded.description,
        loaded.note,
        stop_ids=loaded.stop_ids,
        chat_template=loaded.chat_template,
        chat_default=loaded.chat_default,
    )
