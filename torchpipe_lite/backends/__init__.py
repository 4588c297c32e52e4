"""Built-in backends: importing this package registers every one of them by name."""

from . import (  # noqa: F401  (imported for their registrations)
    builtin,
    engine_tensor,
    image_cpu,
    image_gpu,
    jump,
    process,
    sync_tensor,
    tensorrt_tensor,
    torch_tensor,
)
