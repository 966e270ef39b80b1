from .predictor import Predictor, expand_inputs  # noqa: F401
