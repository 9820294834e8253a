"""Shared test set-up."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """The tests multiply and factor small matrices: one BLAS thread is faster, and on a loaded
    2-core machine OpenBLAS's spinning threads made them 3-15x slower."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
