"""Class-conditional diffusion: the schedule's math, the network, the losses, the sampler and the training loop.

schedule.py    NoiseSchedule: float64 betas / alphas / alpha_bar; q_sample, predict_x0, posterior, sigma2, kl_weight,
               and the reverse steps ddpm_step / ddim_step
unet.py        build_unet(preset, num_classes, in_channels, resolution): diffusers UNet2DModel + learned null class
losses.py      the loss registry: ddpm, cbdm, diffrop, cbdm+diffrop (pure functions, per-sample terms)
sampler.py     sample(...): the DDPM / DDIM loop with guidance and one noise stream per image
batches.py     BatchOrder: which images each step sees (shuffling, or class-balanced resampling)
margin.py      MarginCalibrator: DiffROP's `margin: auto`
init_from.py   load_init(ref, ...): generator.init_from, a pretrained diffusers UNet2DModel + a zero class embedding
pipeline.py    ClassConditionalPipeline: the diffusers DiffusionPipeline of a trained generator (guidance, seeds)
pipeline_folder.py  write_pipeline / read_pipeline: the exported pipeline folder (generator/diffusers, ltaug export)
ema.py, grid.py, checkpoint.py (files, loading, compatibility), train.py (train_generator)
"""

from ltaug.diffusion.checkpoint import LoadedGenerator, export_diffusers, load_generator, resolve_checkpoint
from ltaug.diffusion.losses import LOSSES, get_loss, loss_options, register
from ltaug.diffusion.pipeline import ClassConditionalPipeline
from ltaug.diffusion.sampler import guidance_scale, sample, to_uint8
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.train import GeneratorResult, NonFiniteLossError, TrainingInterrupted, train_generator
from ltaug.diffusion.unet import ClassConditionalUNet, build_unet

__all__ = ["LoadedGenerator", "export_diffusers", "load_generator", "resolve_checkpoint", "LOSSES", "get_loss",
           "loss_options", "register", "guidance_scale", "sample", "to_uint8", "NoiseSchedule", "GeneratorResult",
           "NonFiniteLossError", "TrainingInterrupted", "train_generator", "ClassConditionalUNet", "build_unet",
           "ClassConditionalPipeline"]
