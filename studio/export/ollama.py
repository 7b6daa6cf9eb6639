"""An Ollama Modelfile beside a GGUF export: FROM the file, the run's chat template in Ollama's Go template
language, every stop token, and the studio's default sampling.

Ollama's templates are Go's text/template, not Jinja: the run's Jinja template is recognised by the markers of a
known format (ChatML, Llama 3, Gemma, Mistral, Phi-3, the studio's default) and written as that format's Go
template, which renders the same text for a conversation of system, user and assistant turns. A template of no
known format gets no TEMPLATE line (Ollama then falls back on its own guess), and the export says so.
"""

from __future__ import annotations

import json

from studio.data.chat import DEFAULT_CHAT_TEMPLATE
from studio.data.meta import ChatTokens
from studio.inference.generate import SamplingConfig

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3 = """<|begin_of_text|>{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
GEMMA = """<bos>{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
"""
MISTRAL = """<s>{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]{{ else if eq .Role \
"assistant" }}{{ .Content }}</s>{{ end }}{{ end }}"""
PHI3 = """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
"""
# the studio's default (studio.data.chat.DEFAULT_CHAT_TEMPLATE): BOS and EOS are the run's texts for them
STUDIO_DEFAULT = """BOS{{- range .Messages }}{{ if eq .Role "user" }}User{{ else if eq .Role "assistant" }}Assistant\
{{ else }}System{{ end }}:
{{ .Content }}EOS
{{ end }}Assistant:
"""

# a Jinja template's format, by a marker only it writes (the studio's default: by its exact text)
MARKERS = (("<|im_start|>", CHATML), ("<|start_header_id|>", LLAMA3), ("<start_of_turn>", GEMMA), ("[INST]", MISTRAL))


def go_template(jinja: str, tokens: ChatTokens) -> str | None:
    """The Go template of the run's Jinja chat template's format; None when it is of no format known here."""
    if jinja == DEFAULT_CHAT_TEMPLATE:
        return STUDIO_DEFAULT.replace("BOS", tokens.bos).replace("EOS", tokens.eos)
    for marker, template in MARKERS:
        if marker in jinja:
            return template
    if "<|user|>" in jinja and "<|end|>" in jinja:
        return PHI3
    return None


def modelfile(gguf_name: str, jinja: str | None, tokens: ChatTokens, stops: list[str]) -> tuple[str, str | None]:
    """The Modelfile's text, and a note when the run's chat template could not be written as a Go template."""
    lines = [f"FROM ./{gguf_name}", ""]
    note = None
    if jinja:
        template = go_template(jinja, tokens)
        if template is None:
            note = "the run's chat template is of no format the export knows; the Modelfile has no TEMPLATE"
        else:
            lines += [f'TEMPLATE """{template}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    sampling = SamplingConfig()
    lines += [
        f"PARAMETER temperature {sampling.temperature}",
        f"PARAMETER top_k {sampling.top_k}",
        f"PARAMETER top_p {sampling.top_p}",
        f"PARAMETER repeat_penalty {sampling.repetition_penalty}",
    ]
    return "\n".join(lines) + "\n", note
