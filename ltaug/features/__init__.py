"""The feature-space mode (`generator.space: features`): backbone -> cached features -> a diffusion model on the
feature vectors -> synthetic features -> a classifier head retrained on real + synthetic features -> evaluation in
the feature space. Submodules are imported where they are used (store.py sits below the diffusion loop, the
pipeline above it)."""
