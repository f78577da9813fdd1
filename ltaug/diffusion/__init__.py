"""Class-conditional diffusion (torch inside the modules, not here, so reading a recipe stays torch-free).

schedule.py   NoiseSchedule (float64 betas / alphas / alpha_bar; q_sample, predict_x0, posterior, sigma2, kl_weight)
unet.py       build_unet(preset, num_classes, in_channels, resolution): diffusers UNet2DModel + learned null class
losses.py     the loss registry: ddpm, cbdm, diffrop, cbdm+diffrop (pure functions, per-sample terms)
train.py      train_generator(recipe, run_dir, *, resume, report, progress): the training loop
checkpoint.py load_generator(path, device, ema) -> LoadedGenerator; checkpoint files
ema.py, grid.py, sampler.py, config.py (the `generator` recipe section)
"""
