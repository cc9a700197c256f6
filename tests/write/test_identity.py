import pytest

from cohort.errors import ConfigError
from cohort.write.identity import SALT_ENV, IdentityConfig, pseudonym


def test_keyed_hash_is_stable_per_salt_and_hides_the_id(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    a = IdentityConfig(salt="one").resolved()
    b = IdentityConfig(salt="two").resolved()
    key = pseudonym("PAT-0001", a)
    assert key == pseudonym("PAT-0001", a) and len(key) == 24
    assert key != pseudonym("PAT-0001", b) and "PAT" not in key
    assert pseudonym(None, a) is None
    assert "one" not in repr(a)


def test_salt_from_the_environment_or_explicit_keep_ids(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    with pytest.raises(ConfigError, match="COHORT_SALT"):
        IdentityConfig().resolved()
    keep = IdentityConfig(keep_ids=True).resolved()
    assert pseudonym("PAT-0001", keep) == "PAT-0001"
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert pseudonym("x", IdentityConfig().resolved()) == pseudonym(
        "x", IdentityConfig(salt="from-env").resolved())


def test_keep_ids_wins_over_a_salt_in_the_environment_not_over_an_explicit_one(monkeypatch):
    monkeypatch.setenv(SALT_ENV, "from-env")
    keep = IdentityConfig(keep_ids=True).resolved()
    assert keep.salt is None and pseudonym("PAT-0001", keep) == "PAT-0001"
    with pytest.raises(ConfigError, match="one of the two"):
        IdentityConfig(salt="explicit", keep_ids=True).resolved()
