"""A stand-in for a @triton.jit kernel whose every launch raises: how the tests inject fast-path failures."""


class FailingKernel:
    """`kernel[grid](...)` raises `error()` and counts the launch."""

    def __init__(self, error):
        self.error = error
        self.launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            raise self.error()
        return launch


def out_of_resources():
    """The error Triton raises when a block needs more shared memory than the GPU has."""
    from triton.runtime.errors import OutOfResources
    return OutOfResources(163840, 101376, "shared memory")
