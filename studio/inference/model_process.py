"""The playground's generation process: `python -m studio.inference.model_process`, JSON lines in and out.

The studio's UI never imports torch, so it starts this process and talks to it over pipes. Requests on
stdin, one JSON object per line:
    {"generate": {"target": RUN|DIR, "checkpoint": STEP|null, "prompt": TEXT, "seed": N|null,
                  "max_new_tokens": N, "temperature": T, "top_k": K, "top_p": P, "repetition_penalty": R}}
    (chat mode: "messages": [{"role", "content"}, ...] instead of "prompt", rendered with the chat template
    up to the assistant's answer, which is what streams back)
    {"predict": {"target": RUN|DIR, "checkpoint": STEP|null, "text": TEXT, "top_k": K}}
                          a classifier's labels, or a masked LM's fills of each [MASK] (studio.inference.predict)
    {"look": {"top_k": K}}
                          a look inside the last generation's tokens, with the model that made it
    {"attend": {"token": I, "layer": L, "head": H}}
                          where head H of layer L looked when the model chose the last answer's token I
    {"stop": true}        end the current generation after the token being made
Replies on stdout, one JSON object per line:
    {"loaded": "run r1, step 500", "chat": B}    the model is ready (loaded once, reused while unchanged);
                                                 chat: whether it has a chat template
    {"token": TEXT, "tokens_per_s": F}           text as it grows
    {"done": {"tokens": N, "tokens_per_s": F, "stopped": bool}}
    {"prediction": {"labels": [[LABEL, P], ...]} | {"fills": [[[TOKEN, P], ...], ...]}}
    {"looks": [{"token_id": ID, "text": TEXT, "probability": P, "entropy": H, "alternatives": [[TEXT, P], ...]},
               ...]}                             one per answer token: studio.inference.generate's TokenLook, computed
                                                 by `token_looks` as `generate --logprobs K` does
    {"attention": {"index": I, "token": TEXT, "layer": L, "head": H, "layers": N, "heads": N, "context": [TEXT, ...],
                   "weights": [W, ...]}}         studio.inference.attention's TokenAttention, as `generate --attention`
    {"error": MESSAGE}                           one line the user can act on; the worker carries on
A reader thread takes requests as they come, so a stop arrives while tokens are being made.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
from typing import Any

from studio.errors import StudioError

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")


def reply(**message: Any) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def read_requests(requests: queue.Queue, stop: threading.Event) -> None:
    """stdin, line by line: a stop sets the event at once, the rest queue up; end of input queues None."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            reply(error=f"not a JSON request: {line.strip()[:80]}")
            continue
        if request.get("stop"):
            stop.set()
        else:
            requests.put(request)
    stop.set()
    requests.put(None)


class Session:
    """The loaded model (kept while the same target, checkpoint and use are asked for), and the last generation's
    prompt and answer ids (what a look inside is about)."""

    def __init__(self):
        self.key: tuple | None = None
        self.model = None  # a studio.inference.generate Generator, or a studio.inference.predict Classifier or MaskedLM
        self.answered: tuple[Any, list[int], list[int]] | None = None  # (generator, prompt ids, answer ids)

    def load(self, target: str, step: int | None, use: str):
        """The model of target at step, to generate with or to predict with (`use`); "latest" is looked up each
        time, so a run still training gives its newest checkpoint without restarting the worker."""
        from studio.inference.generate import load_generator
        from studio.inference.predict import load_predictor

        key = (target, step, latest_checkpoint_name(target) if step is None else None, use)
        if self.key != key:
            self.model, self.key = None, None
            self.model = load_generator(target, step) if use == "generate" else load_predictor(target, step)
            self.key = key
            if use == "generate":
                note = self.model.note
                reply(
                    loaded=self.model.description + (f" ({note})" if note else ""),
                    chat=self.model.chat_template is not None,
                )
            else:
                reply(loaded=self.model.description, chat=False)
        return self.model

    def generate(self, request: dict[str, Any], stop: threading.Event) -> None:
        from studio.inference.generate import Rate, SamplingConfig

        try:
            sampling = SamplingConfig(**{key: request[key] for key in SAMPLING_KEYS if key in request})
        except TypeError as error:
            raise StudioError(f"bad sampling values: {error}") from None
        sampling.check()
        self.answered = None
        generator = self.load(str(request["target"]), request.get("checkpoint"), use="generate")
        messages = request.get("messages")
        prompt_ids = generator.encode(generator.chat_prompt(messages) if messages else str(request.get("prompt", "")))
        answer_ids: list[int] = []  # filled as tokens are made: no extra work while generating
        stream = generator.stream_ids([prompt_ids], sampling, request.get("seed"), answer_ids=[answer_ids])
        self.answered = (generator, prompt_ids, answer_ids)
        rate, tokens_per_s = Rate(), 0.0
        stop.clear()
        for _, delta in stream:
            if delta is not None:
                tokens_per_s = rate.tick()
                reply(token=delta, tokens_per_s=round(tokens_per_s, 1))
            if stop.is_set():  # after a token is sent, before the next is made: each token made is shown
                break
        reply(done={"tokens": rate.tokens, "tokens_per_s": round(tokens_per_s, 1), "stopped": stop.is_set()})

    def look(self, request: dict[str, Any]) -> None:
        """Each token of the last answer: its probability, the entropy there and the top_k likeliest tokens."""
        from studio.inference.generate import token_looks

        if self.answered is None:
            raise StudioError("no answer to look inside: generate one first")
        generator, prompt_ids, answer_ids = self.answered
        looks = token_looks(
            generator.model, generator.tokenizer, prompt_ids, answer_ids, int(request.get("top_k", 5)),
            generator.block_size,
        ) if answer_ids else []  # fmt: skip
        reply(looks=[dataclasses.asdict(look) for look in looks])

    def attend(self, request: dict[str, Any]) -> None:
        """Where one head of one layer looked when the last answer's token `token` was chosen."""
        from studio.inference.attention import token_attention

        if self.answered is None or not self.answered[2]:
            raise StudioError("no answer to look inside: generate one first")
        generator, prompt_ids, answer_ids = self.answered
        index = int(request.get("token", 0))
        if not 0 <= index < len(answer_ids):
            raise StudioError(f"the answer has {len(answer_ids)} tokens; token {index} is not one of them")
        attention = token_attention(
            generator.model, generator.tokenizer, prompt_ids + answer_ids, len(prompt_ids) + index,
            int(request.get("layer", 0)), int(request.get("head", 0)), generator.block_size,
        )  # fmt: skip
        reply(attention={"index": index, **dataclasses.asdict(attention)})

    def predict(self, request: dict[str, Any]) -> None:
        self.answered = None
        predictor = self.load(str(request["target"]), request.get("checkpoint"), use="predict")
        reply(prediction=predictor.predict(str(request.get("text", "")), int(request.get("top_k", 5))))


def latest_checkpoint_name(target: str) -> str | None:
    """The name of a run's newest checkpoint (None for a Hugging Face folder or a run without one)."""
    from pathlib import Path

    from studio.run_folder.layout import is_run, latest_checkpoint, run_path

    if (Path(target).expanduser() / "config.json").is_file():  # an exported folder: one set of weights, no name check
        return None
    run_dir = Path(target) if is_run(Path(target)) else run_path(target)
    latest = latest_checkpoint(run_dir) if is_run(run_dir) else None
    return latest.name if latest else None


def main() -> int:
    requests: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=read_requests, args=(requests, stop), daemon=True).start()
    session = Session()
    while (request := requests.get()) is not None:
        try:
            if "generate" in request:
                session.generate(request["generate"], stop)
            elif "predict" in request:
                session.predict(request["predict"])
            elif "look" in request:
                session.look(request["look"])
            elif "attend" in request:
                session.attend(request["attend"])
            else:
                raise StudioError(f"unknown request {sorted(request)}; send generate, predict, look, attend or stop")
        except StudioError as error:
            reply(error=str(error))
        except Exception as error:  # the UI shows one line; the worker stays up for the next request
            reply(error=f"{type(error).__name__}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
