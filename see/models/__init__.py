from see.models.surgery import compress_model, count_bytes
from see.models.zoo import ZOO, load_model

__all__ = ["ZOO", "compress_model", "count_bytes", "load_model"]
