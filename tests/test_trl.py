"""The preference output trains: TRL's DPOTrainer takes one step on it as saved, with a tiny
random model and a tokenizer built here (nothing is downloaded)."""

from __future__ import annotations

import math
import re

import datasets
import pytest

from factory.cli import main
from tests.helpers.pipelines import write_preference

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[test]')")

SPECIAL = ["<pad>", "<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def word_tokenizer(ds):
    """A word-level tokenizer over every word of the dataset, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = set()
    for row in ds:
        for column in ("prompt", "chosen", "rejected"):
            for message in row[column]:
                words |= set(re.findall(r"\w+|[^\w\s]", message["content"]))
    vocab = {token: i for i, token in enumerate(SPECIAL + sorted(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def test_dpo_trainer_takes_a_step_on_the_preference_dataset(tmp_path, loopback, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_preference(tmp_path, loopback(), min_margin=1)
    assert main(["run", str(path), "--quiet"]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert len(ds) >= 2
    tokenizer = word_tokenizer(ds)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    # Saved and loaded, so the trainer can make its reference model from the same folder.
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "tiny")
    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                         report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, max_length=512)
    # The dataset exactly as factory saved it: id and metadata columns included.
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    result = trainer.train()

    assert result.global_step == 1
    # At the first step the policy is the reference: the DPO loss is -log(sigmoid(0)) = ln 2.
    assert math.isclose(result.training_loss, math.log(2), rel_tol=1e-3)
    row, processed = ds[0], trainer.train_dataset[0]

    def ids(name):  # TRL 1.x names the columns prompt_ids ...; earlier versions prompt_input_ids ...
        return processed[f"{name}_ids"] if f"{name}_ids" in processed else processed[f"{name}_input_ids"]

    prompt = tokenizer.decode(ids("prompt"))
    # TRL read the explicit prompt: the chat template up to the assistant's header, then
    # each answer alone as the completion.
    assert row["prompt"][-1]["content"].split()[0] in prompt and prompt.rstrip().endswith("<|assistant|>")
    assert tokenizer.decode(ids("chosen")).split()[:3] == row["chosen"][0]["content"].split()[:3]
    assert tokenizer.decode(ids("rejected")).split()[:3] == row["rejected"][0]["content"].split()[:3]
    logged = trainer.state.log_history[0]
    assert logged["logps/chosen"] != logged["logps/rejected"]
