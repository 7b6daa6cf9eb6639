"""Chat data: row formats, chat templates rendered exactly as transformers renders them, supervision masks.

The templates below are those of real model families, copied from their tokenizer_config.json (or from TRL's
training variants, for the ones with {% generation %} blocks). transformers renders them as the reference, on a
small byte-level BPE built here that knows every template's special tokens; nothing is downloaded.
"""

# ruff: noqa: E501 -- the templates are copied verbatim, long lines and all

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from studio.data import chat
from studio.data.chat import (
    DEFAULT_CHAT_TEMPLATE,
    FORMATS,
    ChatTemplate,
    detect_format,
    encode_messages,
    encode_text,
    read_chat_template,
    to_messages,
)
from studio.errors import StudioError

# ---- the templates ----------------------------------------------------------------------------------
QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LLAMA32 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

GEMMA3 = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Mistral-7B-Instruct v0.1/v0.2 and Mixtral-8x7B-Instruct: no system turn (it raises).
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Mistral-7B-Instruct v0.3: the system prompt goes into the user turn that ends the conversation, so a conversation
# that ends with an answer (every training row) loses it: its answers cannot be located, and encoding refuses.
MISTRAL_V3 = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# Phi-3-mini-4k-instruct: turns end with <|end|>, and a conversation without the generation prompt with eos.
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# TRL's training variants (trl/chat_templates/*_training.jinja): the answers in {% generation %} blocks.
QWEN25_TRAINING = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>assistant' }}
        {%- generation %}
        {%- if not message.tool_calls %}
            {{- '\n' + message.content + '<|im_end|>\n' }}
        {%- else %}
            {%- if message.content %}
                {{- '\n' + message.content }}
            {%- endif %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function is defined %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '\n<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {{- tool_call.arguments | tojson }}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
        {%- endgeneration %}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Its strings hold real newlines, as in TRL's file.
GEMMA3_TRAINING = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {{ '<start_of_turn>model
' }}
        {%- generation -%}
            {%- if message['content'] is string -%}
                {{ message['content'] | trim }}
            {%- elif message['content'] is iterable -%}
                {%- for item in message['content'] -%}
                    {%- if item['type'] == 'image' -%}
                        {{ '<start_of_image>' }}
                    {%- elif item['type'] == 'text' -%}
                        {{ item['text'] | trim }}
                    {%- endif -%}
                {%- endfor -%}
            {%- else -%}
                {{ raise_exception("Invalid content type") }}
            {%- endif -%}
            {{ '<end_of_turn>
' }}
        {%- endgeneration -%}
    {%- else -%}
        {{ '<start_of_turn>' + message['role'] + '
' + (first_user_prefix if loop.first else "") }}
        {%- if message['content'] is string -%}
            {{ message['content'] | trim }}
        {%- elif message['content'] is iterable -%}
            {%- for item in message['content'] -%}
                {%- if item['type'] == 'image' -%}
                    {{ '<start_of_image>' }}
                {%- elif item['type'] == 'text' -%}
                    {{ item['text'] | trim }}
                {%- endif -%}
            {%- endfor -%}
        {%- else -%}
            {{ raise_exception("Invalid content type") }}
        {%- endif -%}
        {{ '<end_of_turn>
' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"""

LLAMA3_TRAINING = r"""{%- for message in messages %}
    {%- if loop.index0 == 0 %}{{- bos_token }}{%- endif %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {%- generation %}
        {{- message['content'] | trim + '<|eot_id|>' }}
        {%- endgeneration %}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


@dataclass(frozen=True)
class Family:
    source: str
    bos: str | None
    eos: str
    after: str  # what ends each answer, and is learnt with it
    before: str = ""  # what the template learns before each answer (a generation block may start earlier)
    takes_system: bool = True  # False: the template refuses a system turn
    keeps_system: bool = True  # False: the system prompt vanishes from conversations that end with an answer


FAMILIES = {
    "qwen2.5": Family(QWEN25, None, "<|im_end|>", "<|im_end|>"),
    "smollm2": Family(SMOLLM2, "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "llama3": Family(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "llama3.2": Family(LLAMA32, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma3": Family(GEMMA3, "<bos>", "<eos>", "<end_of_turn>"),
    "mistral": Family(MISTRAL, "<s>", "</s>", "</s>", takes_system=False),
    "mistral-v0.3": Family(MISTRAL_V3, "<s>", "</s>", "</s>", before=" ", keeps_system=False),
    "phi3": Family(PHI3, None, "<|endoftext|>", "<|end|>"),
    "zephyr": Family(ZEPHYR, "<s>", "</s>", "</s>"),
    "default": Family(DEFAULT_CHAT_TEMPLATE, "<s>", "</s>", "</s>"),
    "qwen2.5-training": Family(QWEN25_TRAINING, None, "<|im_end|>", "<|im_end|>\n", before="\n"),
    "gemma3-training": Family(GEMMA3_TRAINING, "<bos>", "<eos>", "<end_of_turn>\n"),
    "llama3-training": Family(LLAMA3_TRAINING, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
}
SPECIAL_TOKENS = [
    *("<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    *("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<s>", "</s>"),
    *("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
]

# ---- the conversations ------------------------------------------------------------------------------
SYSTEM = {"role": "system", "content": "You are terse. Answer in one line."}
EXCHANGES = [
    ("What is 2 + 2?", "4."),
    ("Say hello in French, with an accent.", "Bonjour,  ça va ? 😀 (deux espaces)"),
    ("Write an add function in Python.", "def add(a, b):\n    return a + b"),
]


def conversation(exchanges: int, system: bool) -> list[dict[str, str]]:
    turns = [SYSTEM] if system else []
    for question, answer in EXCHANGES[:exchanges]:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return turns


CONVERSATIONS = {
    "single": conversation(1, system=False),
    "single+system": conversation(1, system=True),
    "multi": conversation(3, system=False),
    "multi+system": conversation(3, system=True),
}


# ---- the tokenizers ----------------------------------------------------------------------------------
@cache
def byte_level_bpe() -> Tokenizer:
    """A GPT-2 style byte-level BPE: offsets of spaces trimmed (empty), emoji split into byte pieces."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [text for turns in CONVERSATIONS.values() for turn in turns for text in turn.values()]
    corpus += [family.source for family in FAMILIES.values()]
    tokenizer.train_from_iterator(corpus * 3, trainer)
    return tokenizer


@cache
def sentencepiece_like() -> Tokenizer:
    """A Llama-2/Mistral style tokenizer: "▁" for spaces, one token per ASCII character, other characters as
    byte-fallback pieces that share their character's offsets."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{byte:02X}>": 3 + byte for byte in range(256)}}
    for char in "▁" + "".join(chr(code) for code in range(33, 127)):
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tokenizer


def reference(family: Family, tokenizer: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    """transformers' tokenizer around a copy of `tokenizer`, with the family's template and special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer.to_str()),
        bos_token=family.bos,
        eos_token=family.eos,
        chat_template=family.source,
        **special,
    )


@cache
def reference_for(name: str) -> PreTrainedTokenizerFast:
    return reference(FAMILIES[name], byte_level_bpe())


def template_for(name: str) -> ChatTemplate:
    family = FAMILIES[name]
    return ChatTemplate(family.source, bos_token=family.bos or "", eos_token=family.eos)


def supervised_runs(tokenizer: Tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """Each run of consecutive supervised tokens, decoded."""
    runs, run = [], []
    for token, learnt in zip([*ids, None], [*mask, 0]):
        if learnt:
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run, skip_special_tokens=False))
            run = []
    return runs


def answers(messages: list[dict[str, str]]) -> list[str]:
    return [message["content"] for message in messages if message["role"] == "assistant"]


def refuses_system(family: Family, messages: list[dict[str, str]]) -> bool:
    return not family.takes_system and messages[0]["role"] == "system"


# ---- rendering ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("conversation_name", CONVERSATIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_render_matches_transformers(name, conversation_name):
    family, messages = FAMILIES[name], CONVERSATIONS[conversation_name]
    ours, theirs = template_for(name), reference_for(name)
    if refuses_system(family, messages):
        with pytest.raises(
            StudioError, match="the chat template refuses this conversation: Conversation roles must alternate"
        ):
            ours.render(messages)
        with pytest.raises(Exception, match="Conversation roles must alternate"):
            theirs.apply_chat_template(messages, tokenize=False)
        return
    assert ours.render(messages) == theirs.apply_chat_template(messages, tokenize=False)
    for end, message in enumerate(messages, start=1):
        if message["role"] == "user":  # every prompt of the conversation, as at inference time
            prompt = messages[:end]
            expected = theirs.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            assert ours.render(prompt, add_generation_prompt=True) == expected


@pytest.mark.parametrize("conversation_name", CONVERSATIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_supervised_tokens_are_the_answers_and_their_end(name, conversation_name):
    family, messages = FAMILIES[name], CONVERSATIONS[conversation_name]
    if refuses_system(family, messages):
        return
    template, tokenizer = template_for(name), byte_level_bpe()
    if messages[0]["role"] == "system" and not family.keeps_system:
        with pytest.raises(StudioError, match=r"renders the prompt of the assistant's turn 3 differently once the"):
            encode_messages(tokenizer, template, messages)
        return
    ids, mask = encode_messages(tokenizer, template, messages)
    assert ids == reference_for(name).apply_chat_template(messages, return_dict=False)
    assert len(mask) == len(ids) and set(mask) == {0, 1}
    expected = [family.before + answer + family.after for answer in answers(messages)]
    assert supervised_runs(tokenizer, ids, mask) == expected


@pytest.mark.parametrize("conversation_name", CONVERSATIONS)
@pytest.mark.parametrize("name", [name for name in FAMILIES if name.endswith("-training")])
def test_generation_blocks_give_transformers_assistant_mask(name, conversation_name):
    messages, template = CONVERSATIONS[conversation_name], template_for(name)
    assert template.has_generation_blocks
    ids, mask = encode_messages(byte_level_bpe(), template, messages)
    expected = reference_for(name).apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids == expected["input_ids"]
    assert mask == expected["assistant_masks"]


def test_templates_without_generation_blocks_say_so():
    assert not template_for("qwen2.5").has_generation_blocks
    assert not ChatTemplate("{{ add_generation_prompt }} generation").has_generation_blocks


def test_eos_is_learnt_when_it_is_also_the_pad_token():
    family = FAMILIES["llama3-training"]
    theirs = reference(family, byte_level_bpe(), pad_token=family.eos)
    messages = CONVERSATIONS["multi+system"]
    ids, mask = encode_messages(byte_level_bpe(), template_for("llama3-training"), messages)
    expected = theirs.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert mask == expected["assistant_masks"]
    eot = theirs.pad_token_id
    learnt_ends = [learnt for token, learnt in zip(ids, mask) if token == eot]
    assert learnt_ends == [0, 0, 1, 0, 1, 0, 1]  # system and user turns end unlearnt, each answer's end learnt


def test_sentencepiece_byte_fallback_pieces_are_learnt_whole():
    family, tokenizer = FAMILIES["mistral"], sentencepiece_like()
    messages = conversation(3, system=False)
    ids, mask = encode_messages(tokenizer, template_for("mistral"), messages)
    assert ids == reference(family, tokenizer).apply_chat_template(messages, return_dict=False)
    assert supervised_runs(tokenizer, ids, mask) == [answer + "</s>" for answer in answers(messages)]


def test_phi3_final_eos_is_not_learnt():
    """Phi-3 closes a conversation with eos after the last <|end|>: that eos belongs to no answer."""
    template = template_for("phi3")
    text, spans = template.supervised_spans(CONVERSATIONS["single"])
    assert text.endswith("4.<|end|>\n<|endoftext|>")
    assert [text[start:end] for start, end in spans] == ["4.<|end|>"]


def test_qwen_learns_im_end_but_not_the_newline_after_it():
    text, spans = template_for("qwen2.5").supervised_spans(CONVERSATIONS["multi"])
    assert [text[start:end] for start, end in spans] == [
        answer + "<|im_end|>" for answer in answers(CONVERSATIONS["multi"])
    ]
    assert all(text[end] == "\n" for _, end in spans)


def test_default_template_writes_roles_and_eos():
    template = ChatTemplate(DEFAULT_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    messages = CONVERSATIONS["single+system"]
    assert template.render(messages) == (
        "<s>System:\nYou are terse. Answer in one line.</s>\nUser:\nWhat is 2 + 2?</s>\nAssistant:\n4.</s>\n"
    )
    assert template.render(messages[:2], add_generation_prompt=True).endswith("</s>\nAssistant:\n")


def test_supervise_all_learns_every_token():
    ids, mask = encode_messages(byte_level_bpe(), template_for("qwen2.5"), CONVERSATIONS["single"], supervise_all=True)
    assert ids == reference_for("qwen2.5").apply_chat_template(CONVERSATIONS["single"], return_dict=False)
    assert mask == [1] * len(ids)


def test_plain_text_ends_with_eos_and_is_learnt_whole():
    tokenizer = byte_level_bpe()
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    ids, mask = encode_text(tokenizer, "Bonjour 😀", eos_id)
    assert ids[-1] == eos_id and tokenizer.decode(ids[:-1]) == "Bonjour 😀"
    assert mask == [1] * len(ids)


# ---- what transformers' Jinja environment offers templates ----------------------------------------
def test_tojson_keeps_non_ascii_and_takes_options():
    source = "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}"
    messages = [{"role": "user", "content": "ça <b> & 😀"}]
    theirs = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(byte_level_bpe().to_str()), chat_template=source
    )
    expected = theirs.apply_chat_template(messages, tokenize=False)
    assert ChatTemplate(source).render(messages) == expected
    assert "ça <b> & 😀" in expected


def test_loop_controls_namespace_dict_and_strftime_now():
    source = (
        "{% set ns = namespace(count=0) %}{% for message in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% set ns.count = ns.count + 1 %}{% endfor %}{{ ns.count }} {{ dict(a=1)['a'] }} {{ strftime_now('%Y') }}"
    )
    rendered = ChatTemplate(source).render(CONVERSATIONS["multi"])
    assert rendered.startswith("1 1 ") and len(rendered) == len("1 1 2025")


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{% set ns = namespace() %}{% set ns._secret = 1 %}{{ ns._secret }}",
        "{{ messages.append(1) }}",
    ],
)
def test_the_sandbox_holds(source):
    with pytest.raises(StudioError, match="the chat template fails on this conversation"):
        ChatTemplate(source).render(CONVERSATIONS["single"])


NESTED_LOOPS = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"


def test_a_runaway_template_is_stopped_by_the_size_of_what_it_writes():
    with pytest.raises(StudioError, match=r"^the chat template writes more than 1,048,[0-9]+ characters") as caught:
        ChatTemplate(NESTED_LOOPS).render(CONVERSATIONS["single"])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",  # writes nothing
        "{% for i in range(99999) %}{% for c in 'x' * 99999 %}{% endfor %}{% endfor %}",  # over a string
    ],
    ids=["range", "string"],
)
def test_a_template_that_loops_without_writing_is_stopped_in_time(source, monkeypatch):
    monkeypatch.setattr(chat, "RENDER_SECONDS", 0.2)
    with pytest.raises(StudioError, match=r"^the chat template takes more than 0.2 s to render one conversation"):
        ChatTemplate(source).render(CONVERSATIONS["single"])


def test_loops_keep_their_loop_variables():
    source = "{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ '.' if loop.last }} {% endfor %}"
    assert ChatTemplate(source).render(CONVERSATIONS["single"]) == "1/2 2/2. "


def test_a_template_that_does_not_compile_names_the_jinja_error():
    with pytest.raises(StudioError, match=r"does not compile: .*endfor.* \(line 1\); fix the template") as caught:
        ChatTemplate("{% for message in messages %}{{ message }}")
    assert "\n" not in str(caught.value)


def test_raise_exception_is_a_studio_error_with_the_templates_message():
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(StudioError, match="refuses this conversation: Conversation roles must alternate"):
        template_for("gemma3").render(two_users)


def test_a_template_that_drops_the_answers_learns_nothing():
    source = (
        "{% for message in messages %}{% if message.role != 'assistant' %}{{ message.content }}{% endif %}{% endfor %}"
    )
    with pytest.raises(StudioError, match="renders no assistant answer"):
        encode_messages(byte_level_bpe(), ChatTemplate(source), CONVERSATIONS["single"])


def test_a_generation_prompt_that_the_turn_does_not_start_with_is_refused():
    source = (
        "{% for message in messages %}<{{ message.role }}>{{ message.content }}{% endfor %}"
        "{% if add_generation_prompt %}<reply>{% endif %}"
    )
    with pytest.raises(StudioError, match=r"renders the prompt of the assistant's turn 2 differently once the answer"):
        ChatTemplate(source).supervised_spans(CONVERSATIONS["single"])


def test_generation_blocks_reshaped_after_rendering_are_refused():
    source = (
        "{% for message in messages %}{% set text %}{% generation %} {{ message.content }} {% endgeneration %}"
        "{% endset %}{{ text | trim }}{% endfor %}"
    )
    template = ChatTemplate(source)
    assert template.has_generation_blocks
    with pytest.raises(StudioError, match=r"cannot locate the chat template's \{% generation %\} blocks"):
        template.supervised_spans(CONVERSATIONS["single"])


# ---- reading a folder's template ----------------------------------------------------------------------
def test_chat_template_jinja_comes_first(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("{{ 'jinja' }}", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "config"}), encoding="utf-8")
    assert read_chat_template(tmp_path) == "{{ 'jinja' }}"


def test_tokenizer_config_template_as_a_string_or_named_list(tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": "plain"}), encoding="utf-8")
    assert read_chat_template(tmp_path) == "plain"
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "chat"}]
    config.write_text(json.dumps({"chat_template": named}), encoding="utf-8")
    assert read_chat_template(tmp_path) == "chat"


def test_no_template_is_none(tmp_path):
    assert read_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}), encoding="utf-8")
    assert read_chat_template(tmp_path) is None


def test_unusable_tokenizer_configs_are_studio_errors(tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "tools"}]}), encoding="utf-8")
    with pytest.raises(StudioError, match="chat templates named tool_use but none named 'default'"):
        read_chat_template(tmp_path)
    config.write_text("{not json", encoding="utf-8")
    with pytest.raises(StudioError, match="cannot read .*tokenizer_config.json"):
        read_chat_template(tmp_path)


# ---- formats -----------------------------------------------------------------------------------------
WHERE = "data.jsonl line 3"


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"messages": [], "text": "x"}, "messages"),
        ({"conversations": [], "text": "x"}, "sharegpt"),
        ({"instruction": "a", "output": "b", "text": "x"}, "alpaca"),
        ({"text": "x", "instruction": "a"}, "text"),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(record, "text", WHERE) == fmt
    assert fmt in FORMATS


def test_detect_format_names_the_row_the_keys_found_and_the_keys_needed():
    with pytest.raises(StudioError) as caught:
        detect_format({"prompt": "a", "completion": "b"}, "body", WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE} matches no data format (its fields: prompt, completion)")
    for needed in ("'messages'", "'conversations'", "'instruction' and 'output'", "'body'"):
        assert needed in message
    with pytest.raises(StudioError, match=f"{WHERE} is a list, not an object"):
        detect_format([], "text", WHERE)


def test_alpaca():
    record = {"instruction": "Translate.", "input": "", "output": "Done."}
    assert to_messages(record, "alpaca", WHERE) == [
        {"role": "user", "content": "Translate."},
        {"role": "assistant", "content": "Done."},
    ]
    record = {"instruction": "Translate.", "input": "chat", "output": "cat", "system": "Be exact."}
    assert to_messages(record, "alpaca", WHERE) == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Translate.\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]
    assert to_messages({"instruction": "a", "input": None, "output": "b", "system": ""}, "alpaca", WHERE) == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]


def test_messages_drop_extra_keys():
    record = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u", "name": "ann"},
            {"role": "assistant", "content": "a", "weight": 1},
        ]
    }
    assert to_messages(record, "messages", WHERE) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]


def test_sharegpt_roles():
    record = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "human", "value": "u"},
            {"from": "gpt", "value": "a"},
            {"from": "user", "value": "u2"},
            {"from": "assistant", "value": "a2"},
        ]
    }
    assert [message["role"] for message in to_messages(record, "sharegpt", WHERE)] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def user(text="u"):
    return {"role": "user", "content": text}


def assistant(text="a"):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    ("record", "fmt", "error"),
    [
        ({"instruction": "a", "output": " "}, "alpaca", "'output' is empty"),
        ({"instruction": 3, "output": "b"}, "alpaca", "'instruction' is a number, not a string"),
        ({"instruction": "a", "output": "b", "input": ["x"]}, "alpaca", "'input' is a list, not a string"),
        ({"instruction": "a", "output": "b", "system": 1}, "alpaca", "'system' is a number, not a string"),
        ({"messages": "hi"}, "messages", "'messages' is a string, not a list of turns"),
        (
            {"messages": [user(), "a"]},
            "messages",
            r"messages\[1\] is a string, not an object with 'role' and 'content'",
        ),
        ({"messages": [user(), {"role": "bot", "content": "a"}]}, "messages", r"messages\[1\] has role 'bot'"),
        ({"messages": [user(), {"content": "a"}]}, "messages", r"messages\[1\] has no 'role'; give one of system"),
        ({"messages": [user(), {"role": "assistant"}]}, "messages", r"messages\[1\] \(assistant\) has no 'content'"),
        (
            {"messages": [user(), {"role": "assistant", "content": [{"type": "text"}]}]},
            "messages",
            r"messages\[1\] \(assistant\) has a list as 'content'",
        ),
        ({"messages": [user(" \n"), assistant()]}, "messages", r"messages\[0\] \(user\) is empty"),
        ({"messages": []}, "messages", "'messages' is empty"),
        ({"messages": [user(), {"role": "system", "content": "s"}, assistant()]}, "messages", "only the first turn"),
        (
            {"messages": [user(), user(), assistant()]},
            "messages",
            r"messages\[1\] is a user turn where an assistant turn belongs",
        ),
        (
            {"messages": [assistant(), user(), assistant()]},
            "messages",
            r"messages\[0\] is an assistant turn where a user turn belongs",
        ),
        ({"messages": [user(), user()]}, "messages", "no assistant turn, so nothing would be learnt"),
        (
            {"messages": [user(), assistant(), user()]},
            "messages",
            "ends with a user turn, from which nothing is learnt",
        ),
        ({"conversations": [{"from": "observation", "value": "x"}]}, "sharegpt", r"conversations\[0\] has from"),
        ({"conversations": [{"from": "human", "value": 1}]}, "sharegpt", r"has a number as 'value'"),
    ],
)
def test_bad_rows_are_one_line_studio_errors_naming_the_row(record, fmt, error):
    with pytest.raises(StudioError, match=error) as caught:
        to_messages(record, fmt, WHERE)
    assert str(caught.value).startswith(f"{WHERE}: ")
    assert "\n" not in str(caught.value)


def test_text_is_not_a_conversation_format():
    with pytest.raises(ValueError, match="not 'text'"):
        to_messages({"text": "x"}, "text", WHERE)
