"""EffiVMT: per-clip motion transfer by head-group LoRA (DESIGN.md).

From the top down: ``commands`` (``effivmt run`` / ``effivmt heads``) -> ``many_clips`` (a clip list) ->
``run`` (one clip's stages) -> ``heads`` (stage 1), ``spatial`` / ``temporal`` (stages 2 and 3, on the shared
``lora_module``), ``generate``; ``plan`` holds the recipe's typed groups and the :class:`RunPlan`.
"""
