"""Prediction stage: the ensemble voter, the tiled predictor, cells from maps, the batch job over many images."""
