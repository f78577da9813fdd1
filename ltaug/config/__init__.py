"""Recipes: typed configuration defined once, below every stage (torch-free).

One file per recipe section (data, generator, synth, classifier, evaluate, logging), the field helpers (fields.py)
and the `Recipe` that holds them with its YAML reader and writer (recipe.py). Every choice list and default is
defined here and imported by the code that uses it.
"""

from ltaug.config.classifier import ClassifierConfig
from ltaug.config.data import DataConfig, test_name
from ltaug.config.evaluate import METRICS, EvaluateConfig, parse_metrics, reference_for
from ltaug.config.features import FeaturesConfig
from ltaug.config.fields import Section, opt, section, yaml_scalar
from ltaug.config.generator import CbdmConfig, DiffropConfig, GeneratorConfig
from ltaug.config.logging import BACKENDS, LoggingConfig
from ltaug.config.recipe import (
                                 RECIPE_DIR,
                                 Recipe,
                                 apply_set,
                                 as_sets,
                                 from_dict,
                                 load_recipe,
                                 read_recipe_file,
                                 recipe_names,
                                 recipe_text,
                                 set_key,
                                 to_dict,
                                 to_yaml,
)
from ltaug.config.synth import SynthConfig

__all__ = ["ClassifierConfig", "FeaturesConfig", "DataConfig", "test_name", "METRICS", "EvaluateConfig",
           "parse_metrics", "reference_for", "Section", "opt", "section", "yaml_scalar", "CbdmConfig", "DiffropConfig",
           "GeneratorConfig", "BACKENDS", "LoggingConfig",
           "RECIPE_DIR", "Recipe", "apply_set", "as_sets", "from_dict", "load_recipe", "read_recipe_file",
           "recipe_names", "recipe_text", "set_key", "to_dict", "to_yaml", "SynthConfig"]
