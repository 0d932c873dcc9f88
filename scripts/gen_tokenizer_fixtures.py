#!/usr/bin/env python3
"""Generate tokenizer reference cases with HuggingFace transformers / tokenizers.

Writes, under ``tests/fixtures/tokenizer/``:

* ``llama32_cases.json`` - the real Llama 3.2 tokenizer (``AutoTokenizer`` / ``MllamaProcessor`` of a
  model directory holding it and the Instruct chat template; default the shared
  ``/work/shared/fixtures/tiny-mllama/model``);
* ``small_cases.json`` - the 512-token fixture tokenizer of ``tests/fixtures/models/base/model``.

Each file holds (all ids and texts computed by HF, nothing by hand):

* ``meta``: versions, tokenizer.json sha256, vocabulary size, special ids;
* ``cases``: one entry per text with
  - ``text``;
  - ``ids``: ``tokenizer(text, add_special_tokens=False)``;
  - ``ids_special``: ``tokenizer(text, add_special_tokens=True)`` (tokenizer alone);
  - ``processor_text``: ``processing_mllama.build_string_from_input(text, bos, "<|image|>")``, the text
    ``MllamaProcessor`` hands to its tokenizer;
  - ``ids_processor``: ``processor(text=text, images=[img] * text.count("<|image|>"))["input_ids"]``
    (default ``add_special_tokens=True``);
  - ``ids_processor_nospecial``: the same with ``add_special_tokens=False``;
  - ``decoded`` / ``decoded_skip``: ``tokenizer.decode(ids_processor, skip_special_tokens=False/True)``;
  - chat cases also have ``messages``, ``n_images`` and ``ids_chat``, the ids of
    ``processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`` (the text is
    the rendered prompt, rendered with ``date_string = "26 Jul 2024"``);
* ``decode_cases``: random id sequences (seeded) with ``decode(ids, skip_special_tokens=False/True)``,
  including ids that split multi-byte characters;
* ``single_token_digest``: FNV-1a 64-bit hash (hex) of ``"\\x00".join(decode([i]) for every id)`` encoded
  as UTF-8, with and without ``skip_special_tokens`` (FNV so that the Rust test needs no hash crate).

Usage:

    python3 scripts/gen_tokenizer_fixtures.py [--llama-dir DIR] [--small-dir DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import tokenizers
import transformers
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer
from transformers.models.mllama.processing_mllama import build_string_from_input

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LLAMA_DIR = "/work/shared/fixtures/tiny-mllama/model"
DEFAULT_SMALL_DIR = str(REPO / "tests" / "fixtures" / "models" / "base" / "model")
DATE_STRING = "26 Jul 2024"
IMAGE = "<|image|>"
BOS = "<|begin_of_text|>"

# ----------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------

ENGLISH = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "If I had to write a haiku for this one",
    "Describe this image in one sentence.",
    "What is the capital of France? Paris is the capital of France.",
    "A man, a plan, a canal: Panama.",
    "e.g. i.e. etc. Mr. Smith vs. Dr. Jones",
    "hello",
    "HELLO",
    "Hello",
    " hello",
    "  hello",
    "hello ",
    "hello  ",
    "a",
    " ",
    "",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "The year 2024 was a leap year; 366 days.",
    "She said, \"It's fine.\" He replied: 'Is it?'",
    "(parenthesized) [bracketed] {braced} <angled>",
    "semi;colon:colon,comma.period!exclaim?question",
    "em—dash en–dash hyphen-ated ellipsis… “curly quotes” ‘single’",
    "URL: https://example.com/path?query=1&x=y#frag and email me@example.org",
    "#hashtag @mention $dollar %percent ^caret &amp *star _under_ +plus =eq |pipe \\back /slash ~tilde `tick`",
]

CONTRACTIONS = [
    "I'm here, you're there, they'll come, we've seen, he'd go, it's fine, don't stop.",
    "I'M HERE, YOU'RE THERE, THEY'LL COME, WE'VE SEEN, HE'D GO, IT'S FINE, DON'T STOP.",
    "I'm I'M i'M I'm'm 's 'S 't 'T 're 'RE 've 'Ve 'm 'll 'LL 'd 'D",
    "rock 'n' roll, 'twas, y'all, o'clock, ma'am",
    "it’s (typographic apostrophe) vs it's",
    "'s",
    "''",
    "'''triple'''",
]

NUMBERS = [
    "0", "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3.14159265358979", "-42", "+7", "1,000,000", "1.000.000,50", "0x1F 0b1010 0o777 1e-9 6.02e23",
    "Call 555-0123 or +1 (800) 555-0199.", "Version 2.0.1-rc3", "2024-07-26T12:34:56Z",
    "٣٤٥ (Arabic-Indic digits) १२३ (Devanagari digits)", "½ ¼ ¾ ² ³ ⁴ ₁ ₂", "Ⅻ ⅻ (Roman numerals)",
    "a1b2c3", "abc123def456", "1a", "100%", "$19.99", "€5,00", "¥1000", "#1", "No.1",
]

WHITESPACE = [
    "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\n\n\nb", "a\r\nb", "a\rb",
    "   leading", "trailing   ", "\tleading tab", "trailing tab\t", "\n", "\n\n", "\n\n\n\n\n", " \n", "\n ",
    " \n \n ", "\t", "\t\t\t", "        eight spaces", "line1\nline2\nline3", "para1\n\npara2",
    "  two\n   three\n    four", "mixed \t\n\r whitespace", "\u00a0non-breaking\u00a0space", "ideographic\u3000space",
    "em\u2003space thin\u2009space", "\u2028line separator\u2029paragraph separator", "word \n\n word",
    "end with newline\n", "end with newlines\n\n", "   ", "\r\n\r\n", " . ", "a . b , c",
]

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i ** 2)",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
    "let v: Vec<u32> = (0..10).map(|x| x * 2).collect();",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "SELECT * FROM users WHERE id = 1 AND name LIKE '%bob%';",
    "x = [i for i in range(100) if i % 3 == 0]  # comment",
    "if (a != b && c >= d || !e) { return; }",
    "const f = async () => { await fetch('/api'); };",
    "$ ls -la | grep '.rs' > out.txt 2>&1",
    "    indented code\n        more indented\n",
    "a->b::c<d>::e()?.f[0]",
    "/* block comment */ // line comment",
    "    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)",
    "@decorator\nclass Foo(Bar, metaclass=Meta):\n    pass",
    "print(f\"{x!r:>10}\")",
    "```python\nprint('hi')\n```",
    "<|python_tag|>import math\nprint(math.pi)",
]

UNICODE = [
    "你好，世界！", "我喜欢吃苹果和香蕉。", "日本語のテキストです。ひらがなとカタカナ。", "東京は日本の首都です",
    "한국어 텍스트입니다.", "안녕하세요", "Привет, мир!", "Ελληνικά γράμματα αβγδ", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới", "Γειά σου Κόσμε", "ქართული", "Հայերեն", "አማርኛ",
    "café naïve résumé façade coöperate Ångström Øresund Æsir œuvre straße", "e\u0301 (combining acute) n\u0303",
    "ÀÁÂÃÄÅàáâãäå ÈÉÊË èéêë", "Zürich, München, Köln", "São Paulo, Bogotá, Reykjavík",
    "😀", "😀😃😄", "Hello 👋 world 🌍!", "👨‍👩‍👧‍👦 family (ZWJ)", "👍🏽 thumbs (skin tone)", "🇫🇷🇯🇵 flags",
    "❤️ ✨ ⭐ ☕ ♠ ♣ ♥ ♦", "🤖🧠💡", "emoji at end 🎉", "🎉 emoji at start", "mixed 中文 and English 混合",
    "∑ ∫ √ ∞ ≈ ≠ ≤ ≥ ∂ ∇ π θ λ", "→ ← ↑ ↓ ⇒ ⇔", "© ® ™ § ¶ † ‡ •", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉", "𠀀𠀁 (CJK extension B)", "zero\u200bwidth\u200cjoiners\u200d",
    "\ufeffBOM at start", "control\x00null\x01\x07bell\x1b[31mred\x1b[0m", "tab\x0bvertical\x0cformfeed",
    "\x7fdel", "soft\u00adhyphen", "replacement \ufffd char", "private use \ue000\uf8ff",
    "ａｂｃ１２３", "ǅ ǈ ǋ (titlecase)", "İstanbul ıi", "ß ẞ", "Ⓐⓑⓒ", "ﬁ ﬂ ligatures",
]

SPECIAL_IN_TEXT = [
    "<|eot_id|>", "Hello<|eot_id|>", "Hello <|eot_id|> world", "<|start_header_id|>user<|end_header_id|>\n\nHi",
    "<|begin_of_text|>", "<|begin_of_text|>Hello", "<|begin_of_text|> Hello", "Hello<|begin_of_text|>",
    "x <|begin_of_text|> y", "<|begin_of_text|><|begin_of_text|>double", "<|end_of_text|>", "<|eom_id|><|python_tag|>",
    "<|reserved_special_token_0|><|reserved_special_token_246|><|reserved_special_token_247|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|image|", "<|image", "|image|>", "<|IMAGE|>", "< |image| >", "<|image|>>", "<<|image|>", "<|eot_id|x",
    "<|eot_id|><|eot_id|><|eot_id|>", "a<|eot_id|>b<|eom_id|>c", "<|unknown_token|>", "<|>", "<||>",
    "<s> </s> [INST] [/INST] <unk> <pad>",
]

IMAGE_PROMPTS = [
    "<|image|>", "<|image|>Hello", "<|image|>If I had to write a haiku for this one", "<|image|> Describe it.",
    "<|image|>\nDescribe it.", "<|image|><|image|>Compare these.", "<|image|><|image|><|image|>three",
    "<|image|> <|image|>space between", "<|image|>text<|image|>more text", " <|image|>leading space",
    "\n<|image|>leading newline", "Look: <|image|>", "text first <|image|> then more", "a<|image|>b",
    "<|image|><|begin_of_text|>If I had to write a haiku for this one",
    "<|begin_of_text|><|image|>bos first", "<|image|>text with <|begin_of_text|> later",
    "<|image|><|image|><|begin_of_text|>two images then bos", "<|image|>\n\n<|image|>", "<|image|><|eot_id|>",
    "<|image|>你好", "<|image|>😀", "<|image|>123", "<|image|>'s", "<|image|>  two spaces",
]

CHATS = [
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Write a haiku about the sea."}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image in one sentence."}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Look at this picture: "}, {"type": "image"},
                                               {"type": "text", "text": " What shapes do you see?"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                               {"type": "text", "text": "Compare these two pictures."}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "This is the first one. "},
                                               {"type": "image"}, {"type": "text", "text": "What changed in the second?"}]}]},
    {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": [{"type": "text", "text": "Hi!"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "2+2 = 4."}]},
                  {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "A red house near a lake."}]},
                  {"role": "user", "content": [{"type": "text", "text": "What colour is the roof?"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Translate to French: I'm happy 😀\nThanks!"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "写一首关于月亮的诗。"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  spaces and\ttabs\n\nnewlines  "}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "def f(x):\n    return x * 2\nExplain."}]}]},
]

POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n\r.,;:!?'\"()[]{}<>-_+=*/\\|@#$%^&~`")
    + list("éèêëàâäôöûüçñßøåæœÀÉÖÜ")
    + list("你好世界中文日本語のテキスト한국어")
    + list("Привет мир Ελληνικά مرحبا שלום नमस्ते")
    + ["😀", "👋", "🌍", "👨‍👩‍👧", "👍🏽", "🇫🇷", "❤️", "∑", "√", "→", "©", "\u200b", "\u00a0", "\u3000"]
    + ["  ", "   ", "\n\n", "'s", "'re", "'ll", "'T", "123", "4567", "3.14", " the", " of", "ing", "tion"]
    + [IMAGE, "<|eot_id|>", "<|start_header_id|>", BOS]
)


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        out.append("".join(rng.choice(POOL) for _ in range(k)))
    return out


def all_texts() -> list[str]:
    texts = ENGLISH + CONTRACTIONS + NUMBERS + WHITESPACE + CODE + UNICODE + SPECIAL_IN_TEXT + IMAGE_PROMPTS
    texts += [" " + t for t in ENGLISH[:10]] + [t + "\n" for t in CODE[:5]]
    texts += [IMAGE + t for t in ENGLISH[:8] + UNICODE[:6] + NUMBERS[:4]]
    texts += [BOS + t for t in ENGLISH[:6]]
    texts += random_texts(140, seed=1234)
    seen, uniq = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


# ----------------------------------------------------------------------------------------------


def display_path(p: Path) -> str:
    p = p.resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def dummy_image():
    return Image.new("RGB", (16, 12), (120, 60, 200))


def processor_ids(proc, text: str, **kw) -> list[int]:
    n = text.count(IMAGE)
    images = [dummy_image() for _ in range(n)] if n else None
    return [int(x) for x in proc(text=text, images=images, **kw)["input_ids"][0]]


def text_case(tok, proc, text: str) -> dict:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids_proc = processor_ids(proc, text)
    return {
        "text": text,
        "ids": ids,
        "ids_special": tok(text, add_special_tokens=True)["input_ids"],
        "processor_text": build_string_from_input(text, tok.bos_token, IMAGE),
        "ids_processor": ids_proc,
        "ids_processor_nospecial": processor_ids(proc, text, add_special_tokens=False),
        "decoded": tok.decode(ids_proc, skip_special_tokens=False, clean_up_tokenization_spaces=False),
        "decoded_skip": tok.decode(ids_proc, skip_special_tokens=True, clean_up_tokenization_spaces=False),
    }


def chat_case(tok, proc, chat: dict) -> dict:
    msgs = chat["messages"]
    n_images = sum(1 for m in msgs if isinstance(m["content"], list) for c in m["content"] if c["type"] == "image")
    rendered = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, date_string=DATE_STRING)
    images = [dummy_image() for _ in range(n_images)] if n_images else None
    kw = {"images": images} if images else {}
    out = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                   date_string=DATE_STRING, **kw)
    case = text_case(tok, proc, rendered)
    case["messages"] = msgs
    case["n_images"] = n_images
    case["ids_chat"] = [int(x) for x in out["input_ids"][0]]
    return case


def decode_cases(tok, n_vocab: int, special_ids: list[int], seed: int) -> list[dict]:
    rng = random.Random(seed)
    # tokens whose bytes are not valid UTF-8 on their own (pieces of multi-byte characters)
    partial = [i for i in range(n_vocab) if "\ufffd" in tok.decode([i])]
    out = []
    for k in range(60):
        n = rng.randint(1, 24)
        ids = []
        for _ in range(n):
            r = rng.random()
            if r < 0.35 and partial:
                ids.append(rng.choice(partial))
            elif r < 0.45:
                ids.append(rng.choice(special_ids))
            else:
                ids.append(rng.randrange(n_vocab))
        out.append({
            "ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "text_skip": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        })
    return out


def generate(model_dir: Path, out_path: Path, with_decode_digest: bool = True):
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    proc = AutoProcessor.from_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    n_vocab = max(vocab.values()) + 1
    added = tok.backend_tokenizer.get_added_tokens_decoder() if hasattr(tok, "backend_tokenizer") else {}
    special_ids = sorted(i for i, t in added.items() if t.special)
    cases = [text_case(tok, proc, t) for t in all_texts()]
    chats = [chat_case(tok, proc, c) for c in CHATS]
    # sanity: the text round-trips through decode for every case
    bad = [c["text"] for c in cases if tok.decode(c["ids"], clean_up_tokenization_spaces=False) != c["text"]]
    if bad:
        raise SystemExit(f"decode does not round-trip: {bad[:5]}")
    data = {
        "meta": {
            "generator": "scripts/gen_tokenizer_fixtures.py",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "model_dir": display_path(model_dir),
            "tokenizer_json_sha256": hashlib.sha256((model_dir / "tokenizer.json").read_bytes()).hexdigest(),
            "vocab_size": n_vocab,
            "bos_id": tok.bos_token_id,
            "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id,
            "image_id": tok.convert_tokens_to_ids(IMAGE),
            "eot_id": tok.convert_tokens_to_ids("<|eot_id|>"),
            "eom_id": tok.convert_tokens_to_ids("<|eom_id|>"),
            "special_ids": special_ids,
            "date_string": DATE_STRING,
        },
        "cases": cases + chats,
        "decode_cases": decode_cases(tok, n_vocab, special_ids, seed=99),
    }
    if with_decode_digest:
        joined = "\x00".join(tok.decode([i], clean_up_tokenization_spaces=False) for i in range(n_vocab))
        joined_skip = "\x00".join(
            tok.decode([i], skip_special_tokens=True, clean_up_tokenization_spaces=False) for i in range(n_vocab))
        data["single_token_digest"] = {
            "n": n_vocab,
            "fnv1a64": fnv1a64(joined.encode("utf-8")),
            "fnv1a64_skip": fnv1a64(joined_skip.encode("utf-8")),
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{out_path}: {len(data['cases'])} cases ({len(chats)} chat), {len(data['decode_cases'])} decode cases, "
          f"{out_path.stat().st_size / 1e6:.2f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-dir", default=DEFAULT_LLAMA_DIR)
    ap.add_argument("--small-dir", default=DEFAULT_SMALL_DIR)
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "tokenizer"))
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    out = Path(args.out)
    generate(Path(args.llama_dir), out / "llama32_cases.json")
    generate(Path(args.small_dir), out / "small_cases.json")


if __name__ == "__main__":
    main()
