"""A small CLIP tokenizer (byte-level BPE, as OpenAI CLIP's simple_tokenizer and Hugging Face's CLIPTokenizer) for
models/fashion-ldm, and the files that describe it.

    /usr/bin/python3 tools/train/clip_tokenizer.py [--out models/fashion-ldm]   # writes OUT/tokenizer/*, OUT/tokenizer_reference.json

Vocabulary, built the way CLIP builds its own: ids 0..255 are the 256 byte characters (GPT-2's bytes_to_unicode, in
its order), 256..511 the same with "</w>" appended, then one id per merge (the merged string), then
<|startoftext|> and <|endoftext|> as the last two ids. The merges make every word of the training prompts
("a photo of a {name}" and "{name}" for the ten Fashion-MNIST classes) a single token; any other text falls back
to shorter pieces, down to single bytes.

Encoding (CLIP's algorithm): html-unescape (twice, as CLIP), collapse whitespace, strip, lower-case; split with
CLIP's regex; map each piece's UTF-8 bytes through bytes_to_unicode; BPE with the last character carrying "</w>";
then [BOS] + ids[:75] + [EOS], padded to 77 with the pad id (= <|endoftext|>, as SD 1.5's tokenizer).

Differences from CLIP, on purpose or forced:
* no ftfy.fix_text (not installed; it only repairs mojibake);
* Python's `re` has no \\p{..} classes, so CLIP's pattern
      <\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
  is emulated with letters = [^\\W\\d_]+ (alphanumeric but not a decimal digit or "_"), digits = \\d (one at a
  time) and other = (?:[^\\s\\w]|_)+ (neither space nor alphanumeric; "_" counts as other, as in CLIP).
  These agree with \\p{L} / \\p{N} except for numeric characters that are not decimal digits (e.g. "²", "½",
  Roman numerals), which \\p{N} treats as numbers and this pattern as letters.
"""
import argparse
import html
import json
import os
import re

from common import atomic_write_bytes

HERE = os.path.dirname(os.path.abspath(__file__))

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
CLASS_PROMPT_NAMES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of a {}", "{}"]

PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
                     re.IGNORECASE)


def bytes_to_unicode():
    """GPT-2's reversible map of the 256 byte values to printable unicode characters (dict byte -> char), in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def clean(text):
    """CLIP's basic_clean (without ftfy) and whitespace_clean, then lower-case."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def pieces(text):
    """The pre-tokenized pieces of already cleaned text, each as its byte characters."""
    return ["".join(BYTE_ENCODER[b] for b in p.encode("utf-8")) for p in PATTERN.findall(text)]


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def bpe(token, ranks):
    """CLIP's BPE of one piece (a string of byte characters): a list of vocabulary strings."""
    if token in (BOS, EOS):
        return [token]
    word = tuple(token[:-1]) + (token[-1] + "</w>",)
    while len(word) > 1:
        pairs = get_pairs(word)
        bigram = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if bigram not in ranks:
            break
        first, second = bigram
        merged = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return list(word)


def prompt_words():
    """The pieces of every training prompt, in first-seen order."""
    words = []
    for name in CLASS_PROMPT_NAMES:
        for template in TEMPLATES:
            for p in pieces(clean(template.format(name))):
                if p not in words:
                    words.append(p)
    return words


def build_merges(words):
    """Merges that make each word one token. For each word in turn: BPE it with the merges so far, then merge the
    resulting tokens left to right, appending the new merges at the end (highest ranks). Merges added later never
    change how an earlier word is split, since BPE applies lower ranks first and an earlier word's merges finish it."""
    merges = []
    ranks = {}
    for w in words:
        tokens = bpe(w, ranks)
        while len(tokens) > 1:
            pair = (tokens[0], tokens[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            tokens = [tokens[0] + tokens[1]] + tokens[2:]
    return merges


class ClipTokenizer:
    def __init__(self, merges):
        self.merges = list(merges)
        self.ranks = {pair: i for i, pair in enumerate(self.merges)}
        chars = list(BYTE_ENCODER.values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in self.merges] + [BOS, EOS]
        if len(set(vocab)) != len(vocab):
            raise ValueError("duplicate vocabulary entries")
        self.vocab = vocab
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.bos_id = self.encoder[BOS]
        self.eos_id = self.encoder[EOS]
        self.pad_id = self.eos_id

    @classmethod
    def for_prompts(cls):
        return cls(build_merges(prompt_words()))

    def tokenize(self, text):
        """Vocabulary ids of the text, without BOS/EOS."""
        ids = []
        for p in pieces(clean(text)):
            ids.extend(self.encoder[t] for t in bpe(p, self.ranks))
        return ids

    def __call__(self, text):
        """[BOS] + ids[:75] + [EOS], padded with the pad id to 77: a list of 77 ints."""
        ids = [self.bos_id] + self.tokenize(text)[:MAX_LENGTH - 2] + [self.eos_id]
        return ids + [self.pad_id] * (MAX_LENGTH - len(ids))

    def write(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)

        def write_json(name, obj, indent=2):
            atomic_write_bytes(os.path.join(out_dir, name), (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8"))

        write_json("vocab.json", self.encoder, indent=None)
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        atomic_write_bytes(os.path.join(out_dir, "merges.txt"), merges.encode("utf-8"))
        special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
        write_json("special_tokens_map.json", special)
        write_json("tokenizer_config.json", {"model_max_length": MAX_LENGTH, "do_lower_case": True, **special,
                                             "tokenizer_class": "CLIPTokenizer"})


REFERENCE_TEXTS = [
    "a photo of a t-shirt/top",
    "a photo of a trouser",
    "a photo of a ankle boot",
    "sneaker",
    "t-shirt/top",
    "",
    "   ",
    "A Photo of a SANDAL",
    "  a   photo\tof a\n  bag  ",
    "a photo of a zebra!",
    "dress, coat & bag... (pullover?) it's 2 shirts",
    "caf\u00e9 &amp; under_score",
    "bag " * 80,
]


def reference(tokenizer):
    return [{"text": t, "input_ids": tokenizer(t)} for t in REFERENCE_TEXTS]


def reference_json(tokenizer):
    """tokenizer_reference.json: one {"text", "input_ids"} object a line, for the C# tokenizer's tests."""
    lines = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in reference(tokenizer))
    return ("[\n" + lines + "\n]\n").encode("utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "fashion-ldm"))
    args = parser.parse_args()
    tok = ClipTokenizer.for_prompts()
    for w in prompt_words():
        assert len(bpe(w, tok.ranks)) == 1, w
    tok.write(os.path.join(args.out, "tokenizer"))
    atomic_write_bytes(os.path.join(args.out, "tokenizer_reference.json"), reference_json(tok))
    ref = reference(tok)
    print(f"vocabulary {len(tok.vocab)} (merges {len(tok.merges)}), bos {tok.bos_id}, eos/pad {tok.eos_id}")
    for r in ref:
        n = r["input_ids"].index(tok.eos_id)
        print(repr(r["text"]), [tok.vocab[i] for i in r["input_ids"][:n + 1]])


if __name__ == "__main__":
    main()
