"""The tiny world's character tokenizer (docs/tiny-world.md)."""


class CharTokenizer:
    """Character tokenizer of the tiny world, with pad / mask / end-of-text specials."""
    specials = ("<pad>", "<mask>", "<eos>")
    chars = "0123456789+-=#:?~abcdefghijklmnop"

    def __init__(self):
        self.itos = list(self.specials) + list(self.chars)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.pad_token_id, self.mask_token_id, self.eos_token_id = 0, 1, 2

    def __len__(self):
        return len(self.itos)

    def encode(self, s):
        bad = set(s) - set(self.chars)
        if bad:
            raise ValueError(
                f"characters {sorted(bad)} are not in the tiny vocabulary {self.chars!r}")
        return [self.stoi[ch] for ch in s]

    def decode(self, ids):
        return "".join(self.itos[i] if i >= len(self.specials) else "" for i in ids)
