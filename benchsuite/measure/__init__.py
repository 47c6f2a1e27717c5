"""Measurements: CKA, other similarity measures, principal components, hooks."""

from benchsuite.measure.capture import FeatureCapture
from benchsuite.measure.cka import MinibatchCKA, centred_gram, gram, linear_cka, u_centre
from benchsuite.measure.family import Measurement, measure_models
from benchsuite.measure.pca import StreamingPCA
from benchsuite.measure.similarity import FullBatchSimilarity, MeasureChoice, get_measure, list_measures

__all__ = ["FeatureCapture", "centred_gram", "FullBatchSimilarity", "MeasureChoice", "Measurement", "MinibatchCKA", "StreamingPCA", "gram",
           "get_measure", "linear_cka", "list_measures", "measure_models", "u_centre"]
