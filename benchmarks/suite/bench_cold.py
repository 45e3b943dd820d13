"""Cold start: a new interpreter importing fastmlr and making its first call."""

import fastmlr

from .common import BACKENDS


class ColdStart:
    params = (BACKENDS,)
    param_names = ["backend"]
    timeout = 300

    def timeraw_import(self, backend):
        return "import fastmlr"

    def timeraw_import_and_first_meta_learn(self, backend):
        return f"""
import fastmlr
fastmlr.backend.set_backend({backend!r})
W, s2, p = fastmlr.make_mixture(4, 16, seed=0)
a = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=2000, seed=1)[:3]
b = fastmlr.sample_tasks(W, s2, p, 32, n_tasks=64, seed=2)[:3]
c = fastmlr.sample_tasks(W, s2, p, 16, n_tasks=500, seed=3)[:3]
fastmlr.meta_learn(a, b, c, 4)
"""
