#!/usr/bin/python3
"""Reference renderings for core/text/chat_template (tests/core/text/chat_template_test.cpp).

Renders every real chat template under tests/core/text/chat_templates/ with Python jinja2 exactly
the way Hugging Face transformers' `tokenizer.apply_chat_template(messages, tokenize=False, ...)`
does, and splits preference rows the way TRL's `apply_chat_template` (trl/data_utils.py) does,
then writes the results to tests/core/text/chat_template_cases.json. The C++ renderer has to
reproduce these strings byte for byte.

Run with Debian's interpreter and jinja2 (no transformers, no TRL, no network needed):

    apt-get install python3-jinja2
    /usr/bin/python3 tests/core/text/make_chat_template_fixtures.py

What is mirrored, and from where:
- transformers src/transformers/utils/chat_template_utils.py, `_cached_compile_jinja_template`:
  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
  extension, the `raise_exception` global (raises jinja2 TemplateError), the `strftime_now`
  global and transformers' own `tojson` filter (json.dumps, ensure_ascii=False). The
  AssistantTracker extension ({% generation %}) is left out: no template here uses it and it
  does not change rendered text.
- transformers `render_jinja_template`: the variables `messages`, `tools=None`,
  `documents=None`, `add_generation_prompt`, plus the tokenizer's special tokens
  (`special_tokens_map`: bos/eos/unk/pad, only those that are set and not empty) and extra template kwargs;
  and its `continue_final_message` handling (the CONTINUE_FINAL_MESSAGE_TAG trick).
- TRL trl/data_utils.py `apply_chat_template` for a {"prompt", "chosen", "rejected"} row: the
  prompt rendered with add_generation_prompt (or continue_final_message when it ends with an
  assistant turn), cut back to the common prefix with prompt+chosen and prompt+rejected, and
  the completions taken as what follows that prefix.

`strftime_now` reads a fixed clock (FIXED_NOW below) so that Llama 3.2's date line is stable;
the C++ test passes the same date as ChatTemplateOptions::today.
"""

import datetime
import json
import os
import sys
from copy import deepcopy
from itertools import takewhile

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_DIR = os.path.join(HERE, "chat_templates")
OUTPUT = os.path.join(HERE, "chat_template_cases.json")
FIXED_NOW = datetime.datetime(2025, 3, 7, 9, 30, 0)


def compile_template(text):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(text)


def special_tokens(fixture):
    # transformers' special_tokens_map keeps a token only when it is truthy (`if attr_value:`):
    # an empty string is left out like None, so a template that adds it to text fails.
    return {k: fixture[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if fixture.get(k)}


def apply_chat_template(fixture, messages, add_generation_prompt=False, continue_final_message=False, **kwargs):
    """transformers' apply_chat_template(tokenize=False) for one conversation."""
    chat_template = fixture["chat_template"]
    if continue_final_message and add_generation_prompt:
        raise ValueError(
            "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you "
            "want the model to continue the final message, and add_generation_prompt when you want to add a header "
            "that will prompt it to start a new assistant message instead."
        )
    compiled = compile_template(chat_template)
    chat = messages
    tag = "CONTINUE_FINAL_MESSAGE_TAG "
    if continue_final_message:
        chat = deepcopy(chat)
        final_message = chat[-1].get("content")
        if final_message is None:
            raise ValueError('continue_final_message is set but the final message has no "content" to continue!')
        if "content" not in chat_template:
            raise ValueError('continue_final_message is set to "content" but this is not an accepted field in the chat_template')
        chat[-1]["content"] = chat[-1]["content"] + tag
    rendered = compiled.render(messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                               **special_tokens(fixture), **kwargs)
    if continue_final_message:
        if (final_message.strip() not in rendered) or (tag.strip() not in rendered):
            raise ValueError(
                "continue_final_message is set but the final message does not appear in the chat after "
                "applying the chat template! This can happen if the chat template deletes portions of "
                "the final message. Please verify the chat template and final message in your chat to "
                "ensure they are compatible."
                f"Final message to continue: {final_message.strip()}\nRendered chat:\n{rendered}"
            )
        tag_loc = rendered.rindex(tag.strip())
        if rendered[tag_loc: tag_loc + len(tag)] == tag:
            rendered = rendered[:tag_loc]
        else:
            rendered = rendered[:tag_loc].rstrip()
    return rendered


def trl_preference(fixture, example, **kwargs):
    """TRL's apply_chat_template for a conversational {"prompt", "chosen", "rejected"} example."""
    last_role = example["prompt"][-1]["role"]
    if last_role in ["user", "tool"]:
        add_generation_prompt, continue_final_message = True, False
    elif last_role == "assistant":
        add_generation_prompt, continue_final_message = False, True
    else:
        raise ValueError(f"Invalid role in the last message: {last_role}")
    prompt = apply_chat_template(fixture, example["prompt"], add_generation_prompt=add_generation_prompt,
                                 continue_final_message=continue_final_message, **kwargs)
    prompt_alone = prompt
    prompt_chosen = apply_chat_template(fixture, example["prompt"] + example["chosen"], **kwargs)
    prompt = "".join(x for x, _ in takewhile(lambda x: x[0] == x[1], zip(prompt, prompt_chosen)))
    prompt_rejected = apply_chat_template(fixture, example["prompt"] + example["rejected"], **kwargs)
    prompt = "".join(x for x, _ in takewhile(lambda x: x[0] == x[1], zip(prompt, prompt_rejected)))
    return {
        "prompt_text": prompt,
        "chosen_text": prompt_chosen[len(prompt):],
        "rejected_text": prompt_rejected[len(prompt):],
        "prompt_trimmed": prompt != prompt_alone,
    }


def M(role, content):
    return {"role": role, "content": content}


# Conversations rendered with every template. Names say what each one exercises.
CONVERSATIONS = {
    "single_user": [M("user", "Hello")],
    "system_user": [M("system", "You are a terse assistant."), M("user", "What is 2 + 2?")],
    "multi_turn": [M("user", "Hi"), M("assistant", "Hello! How can I help?"), M("user", "Tell me a joke.")],
    "system_multi_turn": [M("system", "Be brief."), M("user", "Name a colour."), M("assistant", "Blue."),
                          M("user", "Another one."), M("assistant", "Green.")],
    "ends_with_assistant": [M("user", "Count to three."), M("assistant", "1, 2, 3.")],
    "whitespace": [M("system", "  Mind the spaces.  \n"), M("user", "  line one\nline two  \n\n"),
                   M("assistant", "\n answer with spaces \t\n"), M("user", "\tnext\n")],
    "unicode": [M("user", "Grüße — 你好 🙂 naïve café"), M("assistant", "Ça va ? Ответ: да ✓")],
    "unicode_whitespace": [M("user", "\u3000\u00a0wide and no-break spaces\u2003\x1c"),
                           M("assistant", "\u2028answer\u205f\u0085")],
    "special_token_text": [M("user", "<|im_end|> [INST] <end_of_turn> <|eot_id|> </s> <s> <<SYS>>"),
                           M("assistant", "<|start_header_id|>x<|end_header_id|> [/INST] <start_of_turn>model")],
    "empty_content": [M("user", ""), M("assistant", "")],
    "empty_system": [M("system", ""), M("user", "Hi")],
    "think": [M("user", "Why?"), M("assistant", "<think>\nLet me think.\n</think>\n\nBecause."),
              M("user", "And then?"), M("assistant", "<think>\nHmm.\n</think>\n\nThat's all.")],
    "tool_response_user": [M("user", "Weather?"), M("assistant", "Checking."),
                           M("user", "<tool_response>sunny</tool_response>")],
    "json_like": [M("user", 'Quote "this" and a back\\slash\tand\ttabs\x01')],
    # Bad conversations: the real template raises (or does something odd) for these.
    "empty": [],
    "starts_with_assistant": [M("assistant", "I speak first."), M("user", "Hi")],
    "two_users": [M("user", "One"), M("user", "Two")],
    "system_in_middle": [M("user", "Hi"), M("system", "Late system."), M("user", "Again")],
    "system_at_odd_position": [M("user", "Hi"), M("assistant", "Hey"), M("system", "Late system.")],
    "system_only": [M("system", "Only a system prompt.")],
    "two_systems": [M("system", "First."), M("system", "Second."), M("user", "Hi")],
    "tool_role": [M("user", "Weather?"), M("tool", "sunny")],
    "tool_role_json": [M("user", "Weather?"), M("tool", 'said "sunny"\n\ttoday\x01\x1f \\ done \u00e9\u2028'),
                       M("tool", "second result")],
    # Assistant turns after the last real user query (tool responses do not count) keep their reasoning.
    "think_tool_flow": [M("user", "Weather in Paris?"),
                        M("assistant", "<think>\nNeed the tool.\n</think>\n\nCalling the tool."),
                        M("user", "<tool_response>\nsunny\n</tool_response>"),
                        M("assistant", "<think>\nGot it.\n</think>\n\nIt is sunny.")],
    "unknown_role": [M("user", "Hi"), M("narrator", "Meanwhile...")],
    "unknown_role_first": [M("narrator", "Once upon a time"), M("user", "Hi")],
}

# Extra template kwargs some conversations are also rendered with (TRL's chat_template_kwargs).
OPTION_CASES = [
    ("system_user", {"date_string": "01 Jan 2025"}),
    ("single_user", {"enable_thinking": False}),
    ("multi_turn", {"enable_thinking": True}),
]

SECONDARY_TEMPLATES = {"chatml-openorca.json", "llama2-codellama.json", "qwen3-early.json"}
SHORT_LIST = ["system_multi_turn", "whitespace", "unicode_whitespace", "two_users", "think"]
CONTINUE_CASES = ("ends_with_assistant", "whitespace", "unicode", "system_multi_turn", "unknown_role")

PREFERENCE_ROWS = {
    "basic": {"prompt": [M("user", "What colour is the sky?")],
              "chosen": [M("assistant", "It is blue.")], "rejected": [M("assistant", "It is green.")]},
    "system": {"prompt": [M("system", "Answer in one word."), M("user", "Sky colour?")],
               "chosen": [M("assistant", "Blue")], "rejected": [M("assistant", "Green")]},
    "multi_turn": {"prompt": [M("user", "Hi"), M("assistant", "Hello!"), M("user", "Sky colour?")],
                   "chosen": [M("assistant", " Blue, mostly. ")], "rejected": [M("assistant", "\nGreen\n")]},
    "prefill": {"prompt": [M("user", "Sky colour?"), M("assistant", "The sky is")],
                "chosen": [M("assistant", " blue.")], "rejected": [M("assistant", " green.")]},
    # The system prompt and the user turn start with different two-byte UTF-8 characters that share
    # their first byte, so a byte-wise common prefix would cut a character in half.
    "utf8_divergence": {"prompt": [M("system", "é system"), M("user", "ê user")],
                        "chosen": [M("assistant", "yes")], "rejected": [M("assistant", "no")]},
    "ends_with_system": {"prompt": [M("user", "Hi"), M("system", "Late.")],
                         "chosen": [M("assistant", "a")], "rejected": [M("assistant", "b")]},
    "bad_alternation": {"prompt": [M("user", "Hi"), M("user", "Again")],
                        "chosen": [M("assistant", "a")], "rejected": [M("assistant", "b")]},
}


def outcome(fn):
    try:
        return {"text": fn()}
    except jinja2.exceptions.TemplateError as e:
        kind = "raise_exception" if type(e) is jinja2.exceptions.TemplateError else type(e).__name__
        return {"error": str(e), "error_kind": kind}
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        return {"error": str(e), "error_kind": type(e).__name__}


def main():
    files = sorted(f for f in os.listdir(TEMPLATE_DIR) if f.endswith(".json"))
    renders, preferences = [], []
    for name in files:
        with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as f:
            fixture = json.load(f)
        # A template text that renders with the same C++ variant as another file is only checked on a
        # few conversations: its recognition is what differs, not its rendering.
        conversations = SHORT_LIST if name in SECONDARY_TEMPLATES else list(CONVERSATIONS)
        jobs = [(conv, {}) for conv in conversations] + (OPTION_CASES if name not in SECONDARY_TEMPLATES else [])
        for conv, options in jobs:
            messages = CONVERSATIONS[conv]
            entry = {"template": name, "conversation": conv}
            if options:
                entry["options"] = options
            no_gen = outcome(lambda: apply_chat_template(fixture, messages, False, **options))
            gen = outcome(lambda: apply_chat_template(fixture, messages, True, **options))
            entry["no_gen"] = no_gen
            # Most templates only append an assistant header: store the appended part to keep this file small.
            if "text" in gen and "text" in no_gen and gen["text"].startswith(no_gen["text"]):
                entry["gen"] = {"no_gen_plus": gen["text"][len(no_gen["text"]):]}
            else:
                entry["gen"] = gen
            if conv in CONTINUE_CASES and not options:
                entry["continue_final_message"] = outcome(
                    lambda: apply_chat_template(fixture, messages, continue_final_message=True))
            renders.append(entry)
        for row in PREFERENCE_ROWS:
            entry = {"template": name, "row": row}
            try:
                entry.update(trl_preference(fixture, PREFERENCE_ROWS[row]))
            except jinja2.exceptions.TemplateError as e:
                entry.update({"error": str(e), "error_kind": "raise_exception"})
            except ValueError as e:
                entry.update({"error": str(e), "error_kind": "ValueError"})
            preferences.append(entry)

    out = {
        "_comment": "Generated by make_chat_template_fixtures.py; do not edit by hand.",
        "jinja2_version": jinja2.__version__,
        "python_version": sys.version.split()[0],
        "today": FIXED_NOW.strftime("%Y-%m-%d"),
        "conversations": CONVERSATIONS,
        "preference_rows": PREFERENCE_ROWS,
        "renders": renders,
        "preferences": preferences,
    }
    # One render per line: small, and a change to one case shows up as a one-line diff.
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write("{\n")
        keys = list(out)
        for i, key in enumerate(keys):
            value = out[key]
            f.write(json.dumps(key) + ": ")
            if isinstance(value, list):
                f.write("[\n" + ",\n".join(json.dumps(v, ensure_ascii=True) for v in value) + "\n]")
            elif isinstance(value, dict) and key != "preference_rows":
                f.write("{\n" + ",\n".join(json.dumps(k) + ": " + json.dumps(v, ensure_ascii=True)
                                          for k, v in value.items()) + "\n}")
            else:
                f.write(json.dumps(value, ensure_ascii=True))
            f.write(",\n" if i + 1 < len(keys) else "\n")
        f.write("}\n")
    print(f"wrote {OUTPUT}: {len(renders)} renders, {len(preferences)} preference splits from {len(files)} templates")


if __name__ == "__main__":
    main()
