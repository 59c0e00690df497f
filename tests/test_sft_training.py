"""What evol_instruct, self_instruct and magpie make trains as it is: TRL's SFTTrainer takes a
step on each dataset, with a tiny random model and a tokenizer the test builds."""

from __future__ import annotations

import math

import pytest

from tests.helpers.instruction_pipelines import evol_pipeline, magpie_pipeline, run, self_instruct_pipeline

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install trl; it is in the test extra)")

PIPELINES = {
    "evol_instruct": lambda folder, url: evol_pipeline(folder, url, count=12),
    "self_instruct": lambda folder, url: self_instruct_pipeline(folder, url, count=15),
    "magpie": lambda folder, url: magpie_pipeline(folder, url, count=8, system_prompt="You are a patient tutor."),
}


@pytest.mark.parametrize("task", PIPELINES)
def test_sft_trainer_takes_a_step_on_the_dataset(tmp_path, loopback, tiny_model, task):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url = loopback()
    run(PIPELINES[task](tmp_path, url))
    dataset = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert len(dataset) >= 2 and "messages" in dataset.column_names
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                           learning_rate=1e-3, max_length=256, bf16=False, fp16=False, use_cpu=True,
                           report_to="none", save_strategy="no", logging_steps=1, dataloader_num_workers=0)
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset.select_columns(["messages"]),
                             processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
    assert any(not p.detach().equal(before[name]) for name, p in model.named_parameters())
