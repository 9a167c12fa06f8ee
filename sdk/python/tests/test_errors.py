"""Problem documents map to typed errors: the quota ones included."""

from bsn import errors


def _doc(slug, status):
    return {"type": f"urn:bsn:problem:{slug}", "title": "t", "status": status, "detail": "d"}


def test_quota_problems_have_their_own_types():
    assert isinstance(errors.problem(429, _doc("rate-quota", 429)), errors.RetryLater)
    full = errors.problem(507, _doc("storage-quota", 507))
    assert isinstance(full, errors.StorageFull) and full.slug == "storage-quota"
    # An unknown slug falls back on the status.
    assert isinstance(errors.problem(429, _doc("something-new", 429)), errors.RetryLater)
