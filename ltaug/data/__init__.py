"""Long-tailed datasets: one shape for every source (uint8 [N, H, W, C] images, int64 labels, names, counts), and
the synthetic folder format."""

from ltaug.config.data import test_name
from ltaug.data.dataset import LTDataset
from ltaug.data.longtail import class_groups, group_of, longtail_counts, select_longtail
from ltaug.data.sources import (
                                dataset_names,
                                default_data_root,
                                is_available,
                                load_dataset,
                                load_folder,
                                load_from_config,
                                load_npz,
                                to_resolution,
)
from ltaug.data.synthetic import load_synthetic

__all__ = ["LTDataset", "class_groups", "group_of", "longtail_counts", "select_longtail", "dataset_names",
           "default_data_root", "is_available", "load_dataset", "load_folder", "load_from_config", "load_npz",
           "test_name", "to_resolution", "load_synthetic"]
