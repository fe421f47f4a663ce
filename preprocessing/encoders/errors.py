"""The encoder errors (a leaf module, so the store and the builder need not import each other)."""


class EncoderError(ValueError):
    """Unknown encoder name or unusable weights; the message says what to do."""


class WeightsUnavailable(EncoderError):
    """Pretrained weights are neither in the local store nor reachable: the message lists the exact files."""
