"""Data stage: manifest, readers, normalisation, tiling, augmentation, patch sampling, tf.data pipelines."""
