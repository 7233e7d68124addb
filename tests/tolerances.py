"""Where the tests' tolerances come from.

Results of the same computation in one process are compared exactly. Anything computed in
another process, in other batches, with other kernels or on another machine is compared within
the contract's tolerance, or within a bound derived from the computation (below).
"""

from __future__ import annotations

import numpy as np

# float32 between processes, batches and machines (ARCHITECTURE.md).
CONTRACT_ATOL = 1e-5
# float32 unit roundoff: one rounding moves a value by at most U32 times its magnitude.
U32 = 2.0**-24


def float32_mean_atol(n: int, max_abs: float) -> float:
    """How far two float32 means of the same ``n`` values (any summation order) can differ.

    Each is within ``(n + 1) * U32 * max_abs`` of the exact mean: ``n - 1`` additions of partial
    sums at most ``n * max_abs``, then the division (or a product with a rounded ``1 / n``).
    """
    return 2 * (n + 1) * U32 * max_abs


def proba_atol(classifier, input_atol: float = CONTRACT_ATOL) -> float:
    """How far a fitted linear classifier's ``predict_proba`` moves when its inputs move by at
    most ``input_atol`` each: a decision value by at most its coefficient row's L1 norm times
    ``input_atol``; a logistic probability by at most 1/4 of that (its largest slope), a softmax
    one by at most 1/2 (the absolute values of its slopes sum to ``2 p (1 - p)``).
    """
    coef = np.atleast_2d(classifier.coef_)
    slope = 0.25 if coef.shape[0] == 1 else 0.5
    return slope * np.abs(coef).sum(axis=1).max() * input_atol
