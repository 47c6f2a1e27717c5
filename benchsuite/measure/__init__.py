"""Measurements: CKA, principal components, hooks."""

from benchsuite.measure.capture import FeatureCapture
from benchsuite.measure.cka import MinibatchCKA, gram, linear_cka, u_centre
from benchsuite.measure.family import Measurement, measure_models
from benchsuite.measure.pca import StreamingPCA

__all__ = ["FeatureCapture", "Measurement", "MinibatchCKA", "StreamingPCA", "gram", "linear_cka", "measure_models", "u_centre"]
