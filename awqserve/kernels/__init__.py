"""GPU kernels (Triton) and the torch references they are tested against.

`awqserve.kernels.reference` and `awqserve.kernels.w4a16_layout` import only torch. Modules under
`awqserve.kernels.triton` import Triton at their top, so nothing imports them unless a CUDA kernel is
being built or a test runs them (under `TRITON_INTERPRET=1` on CPUs): a runtime install without
Triton never touches them.
"""
