"""Built-in backends: importing this package registers every one of them by name.

``image/`` holds the image stages, ``model/`` the model engines; the structural backends
(``Sequential``, ``Identity``, ``Python``, ``Parallel``, ``Jump``, ``SyncTensor``,
``Process``, the instance groups of ``min = "1&4&8"``), TorchPipe's diagnostic ones
(``Sleep``, ``RuntimeError``, ``C10Exception``) and what every backend
uses (the interface, the registry, parameter parsing, CUDA waits) sit here.
"""

from . import builtin, diagnostic, instance_groups, jump, process, sync_tensor  # noqa: F401  (imported for their registrations)
from .image import image_cpu, image_gpu, mat_ops, pillow_resize  # noqa: F401
from .model import tensorrt_tensor, torch_tensor  # noqa: F401
