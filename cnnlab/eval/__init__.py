"""After training: evaluation reports (`evaluate_run`), test-time augmentation, ensembles, prediction on
image files (`predict_images`, also from an exported ONNX file without torch), batch-norm folding
(`fuse_bn`) and export (`export_run`: ONNX, TorchScript, safetensors). Names load lazily: the ONNX
prediction path never imports torch."""

from ..utils.lazy import lazy_exports

__all__ = ["EvalReport", "evaluate_run", "render_report", "fuse_bn", "fold_batchnorm", "export_run",
           "predict_images", "TTA_NAMES"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "EvalReport": ".report:EvalReport", "evaluate_run": ".report:evaluate_run",
    "render_report": ".report:render_report", "fuse_bn": ".fuse:fuse_bn", "fold_batchnorm": ".fuse:fold_batchnorm",
    "export_run": ".export:export_run", "predict_images": ".predict:predict_images",
    "TTA_NAMES": ".tta:TTA_NAMES"})
