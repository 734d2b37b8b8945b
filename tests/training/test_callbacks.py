from types import SimpleNamespace

import torch

from effivmt.training.callbacks import SampleFramesLogger


def test_training_probe_decodes_a_few_latent_frames_where_the_model_runs(tiny_t2v):
    """Issue 12 item 11: the sample probe decoded every latent frame of the clip on the CPU (81 frames at 480x832:
    minutes per probe while the GPU waited); it now hands the first 2 latent frames, on the module's device, to
    ``decode``."""
    seen, images = [], []

    def decode(z):
        seen.append((tuple(z.shape), z.device))
        return torch.zeros(1, 3, 1 + 4 * (z.shape[2] - 1), 32, 32)

    latents, embeds = torch.randn(1, 16, 6, 4, 4), torch.randn(1, 5, 32)
    probe = SampleFramesLogger(latents, embeds, decode)
    experiment = SimpleNamespace(add_image=lambda tag, image, step, dataformats: images.append(image.shape))
    trainer = SimpleNamespace(logger=SimpleNamespace(experiment=experiment), is_global_zero=True, global_step=0)
    module = SimpleNamespace(transformer=tiny_t2v.transformer, device=torch.device("cpu"))
    probe.on_train_end(trainer, module)
    assert seen == [((1, 16, 2, 4, 4), torch.device("cpu"))]
    assert len(images) == 1
