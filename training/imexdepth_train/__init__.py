"""imexdepth's Python side: IMEXnet depth models, training on rendered rooms, ONNX export.

Modules: ``imex`` (the implicit solve), ``nets`` (networks and their architecture
descriptions), ``export`` (ONNX files in the format of ``models/README.md``), ``fixtures``
(reference files for the Rust tests); the data side is ``render``, ``data``, ``metrics``,
``realeval``, ``nyu`` and ``train``.
"""

__version__ = "0.1.0"
