"""Helpers shared by tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""


#: head labels of the tiny model used by the stage tests: 2 spatial + 2 temporal heads per layer.
LABELS = [["spatial", "temporal", "spatial", "temporal"], ["temporal", "spatial", "temporal", "spatial"]]


def trainer(tmp_path, steps):
    import lightning as L

    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_epochs=-1,
        default_root_dir=tmp_path,
    )


def effective_weights(transformer):
    """base weight + every active adapter's delta, for every adapted attn1 projection."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and ".attn1." in name:
            weight = module.get_base_layer().weight.detach().clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight = weight + module.get_delta_weight(adapter).detach()
            out[name] = weight
    return out
