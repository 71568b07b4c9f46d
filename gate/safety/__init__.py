"""Model files from pull requests: recognised by content, pickles refused, sizes checked before loading.

Candidate files may come from forks, so nothing here runs what a file holds. Pickles are
*parsed* with `pickletools` (a disassembler: it executes nothing) to find the Python
globals they would call, and a file is recognised by its bytes, never by its extension:

- a pickle (protocol 2+ starts with 0x80; older protocols are recognised by parsing), also
  compressed (joblib's zlib/gzip/bz2/xz) or inside a zip that is not a model archive
  (`torch.save` of a module or a state dict): refused;
- a zip archive with `code/` and `constants.pkl`: TorchScript, accepted only when its pickles
  name nothing but tensors, storages and the archive's own TorchScript classes;
- a zip archive with `archive_format` = pt2: a torch.export program, accepted only after the
  checks of `export_archive` (its loader, torch.export.load, is documented as unsafe for
  untrusted files, so the gate hands it a checked and cleaned copy);
- 8-byte header length + JSON: safetensors (data only);
- anything else named .onnx: ONNX (protobuf; onnxruntime never unpickles).

torch is never imported here: refusing a pickle needs no optional extra.

The checks live in one module each: sniff.py (what a file is), pickles.py (recognising and scanning
pickles), pt2.py (torch.export archives), safetensors.py (headers) and onnx_data.py (external data).
This package re-exports what the rest of the gate uses (`safety.identify`, `safety.ONNX`, ...).
"""

from __future__ import annotations

from gate.safety.onnx_data import check_external_data
from gate.safety.pickles import (SAFE_FORMATS_FIX, _Unsafe, looks_like_pickle, scan_pickle, tensor_global,
                                 torchscript_global)
from gate.safety.pt2 import export_archive
from gate.safety.safetensors import safetensors_header
from gate.safety.sniff import ONNX, SAFETENSORS, TORCH_EXPORT, TORCHSCRIPT, identify

__all__ = [
    "ONNX", "SAFETENSORS", "TORCHSCRIPT", "TORCH_EXPORT", "SAFE_FORMATS_FIX", "identify", "looks_like_pickle",
    "scan_pickle", "tensor_global", "torchscript_global", "export_archive", "safetensors_header",
    "check_external_data", "_Unsafe",
]
