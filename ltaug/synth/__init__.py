"""Synthesis: class-balanced samples of a trained generator, written resumably to class folders + manifest.

run.py     synthesize(generator, cfg: SynthConfig, out_dir, *, seed, device), generate_images(...)
plan.py    how many images per class, and the seed of each
folder.py  writing the folder and repairing what a crash leaves (the format: ltaug.data.synthetic)
engine.py  who draws: this process, or Ray workers
filter.py  the optional confidence filter
"""

from ltaug.synth.plan import Plan, image_seed, make_plan, plan_for, plan_table
from ltaug.synth.run import SynthResult, default_out_dir, generate_images, synthesize

__all__ = ["Plan", "image_seed", "make_plan", "plan_for", "plan_table", "SynthResult", "default_out_dir",
           "generate_images", "synthesize"]
