"""Tiny models built on the spot, in a few seconds on a CPU.

A chat model: a real BPE tokenizer and a real (random) Llama with a chat template.
A Q&A chat model: the same, trained until it answers the Q&A pipeline of pipelines.py
with a valid pairs object whose question and answer it samples from a few choices.
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
    corpus = ["question answer pairs about tides volcanoes glaciers coral reefs", '{"pairs": [{"question": "a", "answer": "b"}]}'] * 20
    model, tokenizer = _tiny_llama(corpus, hidden_size, layers)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_llama(corpus: list[str], hidden_size: int, layers: int, vocab_size: int = 400):
    """A random Llama and its chat tokenizer, a BPE trained on `corpus`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None)
    return LlamaForCausalLM(config), fast


QUESTIONS = ["What moves it?", "Why does it change?", "Where is it found?", "How old is it?", "Who studies it?"]
ANSWERS = ["The moon.", "Heat from below.", "Near the coast.", "Very old.", "Scientists at sea."]


def qa_prompts() -> list[list[dict[str, str]]]:
    """The messages the Q&A pipeline of pipelines.py sends for one pair a request, as the
    in-process teacher sees them (the schema stated in the prompt)."""
    from factory.core.structured import with_schema_instructions
    from factory.tasks.qa import qa_schema
    from tests.helpers.pipelines import PERSONAS, QA_SYSTEM, QA_USER, TOPICS

    return [with_schema_instructions([{"role": "system", "content": QA_SYSTEM.replace("{{ k }}", "1")},
                                      {"role": "user", "content": QA_USER.replace("{{ k }}", "1").replace(
                                          "{{ topic }}", topic).replace("{{ persona }}", persona)}], qa_schema(1))
            for topic in TOPICS for persona in PERSONAS]


def build_tiny_qa_model(folder: Path, steps: int = 100) -> Path:
    """A tiny chat model trained to answer qa_prompts() with one pair, its question and its
    answer each sampled from QUESTIONS and ANSWERS: sampling gives real, varied, parseable
    output (a random model's never parses)."""
    import json

    import torch

    rng = random.Random(0)
    prompts = qa_prompts()
    answers = [json.dumps({"pairs": [{"question": q, "answer": a}]}) for q in QUESTIONS for a in ANSWERS]
    model, tok = _tiny_llama([m["content"] for p in prompts for m in p] * 5 + answers * 5, hidden_size=64, layers=2,
                             vocab_size=600)
    heads = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]

    def batch() -> dict:
        rows, labels = [], []
        for _ in range(16):
            head = tok(rng.choice(heads), add_special_tokens=False)["input_ids"]
            tail = tok(rng.choice(answers) + "<|im_end|>", add_special_tokens=False)["input_ids"]
            rows.append(head + tail)
            labels.append([-100] * len(head) + tail)  # learn the answer only
        width = max(map(len, rows))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        target = torch.tensor([t + [-100] * (width - len(t)) for t in labels])
        return {"input_ids": ids, "attention_mask": (ids != tok.pad_token_id).long(), "labels": target}

    return _train_and_save(model, tok, folder, batch, steps, lr=3e-3)


def _train_and_save(model, tokenizer, folder: Path, batch, steps: int, lr: float) -> Path:
    """Train `model` for `steps` steps on `batch()` (model keyword arguments), then save it with its tokenizer."""
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    for _ in range(steps):
        loss = model(**batch()).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
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

    def batch() -> dict:
        sentences = [sentence(rng) for _ in range(32)]
        width = max(len(w) for w, _ in sentences)
        ids = torch.tensor([[vocab[w] for w in ws] + [0] * (width - len(ws)) for ws, _ in sentences])
        labels = torch.tensor([[LABELS.index(t) for t in ts] + [-100] * (width - len(ts)) for _, ts in sentences])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}

    return _train_and_save(model, fast, folder, batch, steps, lr=5e-3)
