from .predictor import Predictor, expand_inputs, pad_to_multiple  # noqa: F401
