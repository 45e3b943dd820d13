"""Named tunables shared by the stage modules.

Kernels take everything they need as arguments; the numbers that decide *how* the
stages call them live here, so that they are visible, documented and adjustable in
one place.
"""

#: Rows of task data handed to a kernel at once by the streaming stages.  Per-chunk
#: temporaries are O(CHUNK_ROWS * d); the result does not depend on the value
#: because chunks are reduced in a fixed order.
CHUNK_ROWS = 1 << 18

#: Bytes of X handed to a kernel at once when its output feeds a BLAS product right
#: away (the subspace stage's group means, the normal equations' gathered rows): the
#: kernel's output then stays in cache for the product, and its allocation is small
#: enough to be reused instead of mapped afresh.
CACHE_BLOCK_BYTES = 8 << 20

#: Default linkage of the clustering stage (see ``cluster_tasks``).
DEFAULT_LINKAGE = "average"

#: Default number of median pairs L in the clustering stage.
DEFAULT_L = 1

#: Largest working matrix (bytes) a stage may allocate before it refuses the call.
MAX_WORK_BYTES = 8 << 30

#: Bytes of the per-block temporaries of blocked computations (the L layers of a
#: block of rows of the clustering distance matrix).
BLOCK_BYTES = 32 << 20

#: Bytes of X in one chunk read from disk by ``open_npy_chunks`` (resident memory of
#: a stream is about one chunk plus the stage's per-chunk temporaries).
STREAM_CHUNK_BYTES = 256 << 20
