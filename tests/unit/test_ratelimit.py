"""Rate limits (fastq/middleware/ratelimit.py): rate strings and the token bucket."""

import pytest

from fastq.exceptions import ConfigurationError
from fastq.middleware.ratelimit import TokenBucket, parse_rate


@pytest.mark.parametrize("rate,per_second", [("100/s", 100), ("10/m", 10 / 60),
                                             ("36/h", 0.01), (5, 5), (None, None)])
def test_parse_rate(rate, per_second):
    assert parse_rate(rate) == pytest.approx(per_second) if per_second else parse_rate(rate) is None


def test_parse_rate_refuses_garbage():
    with pytest.raises(ConfigurationError, match="N/s"):
        parse_rate("fast")


def test_token_bucket_says_how_long_to_wait():
    bucket = TokenBucket(rate=10)
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert 0.08 < wait <= 0.1
