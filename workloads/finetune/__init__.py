"""Fine-tune a local base model fully or with a PEFT adapter, on DeepSpeed (``python -m workloads.finetune``)."""
