"""Model compression: knowledge distillation into a smaller student (int8 quantization is `tunesmith export --quantize int8`)."""

from tunesmith.compress.distill import distill, distillation_loss
from tunesmith.compress.student import parse_student

__all__ = ["distill", "distillation_loss", "parse_student"]
