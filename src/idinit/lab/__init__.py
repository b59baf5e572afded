"""The idinit lab: models, data, training, analyses and the CLI that reproduce the paper."""
