"""Tiny models built on the spot, in a few seconds on a CPU.

A chat model: a real BPE tokenizer and a real (random) Llama with a chat template.
A named-entity model: a real word-level tokenizer and a real BERT token classifier that
learns to tag the person names and street addresses of generated sentences (PER and
STREET, as CoNLL and PII models label them).
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat_model(folder: Path, hidden_size: int = 32, layers: int = 2) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = ["question answer pairs about tides volcanoes glaciers coral reefs", '{"pairs": [{"question": "a", "answer": "b"}]}'] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


# The named-entity model's sentences: names and addresses in a few templates.
FIRST = ["Ada", "Alan", "Grace", "Linus", "Marie", "Niels", "Rosalind", "Edsger", "Barbara", "Donald"]
LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Curie", "Bohr", "Franklin", "Dijkstra", "Liskov", "Knuth"]
STREETS = ["Baker Street", "Elm Road", "Harbour Lane", "Mill Avenue", "Station Road", "Church Street"]
NUMBERS = ["7", "12", "221", "48", "3", "90"]
TEMPLATES = [
    "Please ask {name} about the invoice .",
    "{name} lives at {address} near the park .",
    "Yesterday {name} wrote from {address} about the order .",
    "The parcel for {name} went to {address} .",
    "Send the report to {address} , attention {name} .",
    "Our meeting with {name} moved to Tuesday .",
    "The office at {address} opens at nine .",
    "Call the shop before noon about the delivery .",
]
LABELS = ["O", "B-PER", "I-PER", "B-STREET", "I-STREET"]


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Words and their labels."""
    words, tags = [], []
    for piece in rng.choice(TEMPLATES).split():
        if piece == "{name}":
            words += [rng.choice(FIRST), rng.choice(LAST)]
            tags += ["B-PER", "I-PER"]
        elif piece == "{address}":
            street = rng.choice(STREETS).split()
            words += [rng.choice(NUMBERS), *street]
            tags += ["B-STREET"] + ["I-STREET"] * len(street)
        else:
            words.append(piece)
            tags.append("O")
    return words, tags


def build_tiny_ner_model(folder: Path, steps: int = 100) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = sorted({w for t in TEMPLATES for w in t.split() if not w.startswith("{")}
                   | set(FIRST) | set(LAST) | set(NUMBERS) | {w for s in STREETS for w in s.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(LABELS),
                        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    model = BertForTokenClassification(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    for _ in range(steps):
        batch = [sentence(rng) for _ in range(32)]
        width = max(len(w) for w, _ in batch)
        ids = torch.tensor([[vocab[w] for w in ws] + [0] * (width - len(ws)) for ws, _ in batch])
        labels = torch.tensor([[LABELS.index(t) for t in ts] + [-100] * (width - len(ts)) for _, ts in batch])
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
