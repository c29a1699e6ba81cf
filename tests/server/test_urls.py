from __future__ import annotations

from shipline.store.repositories import public_url, url_key


def test_url_key_is_one_spelling_per_repository() -> None:
    keys = {
        url_key("https://Forge.example/o/r.git"),
        url_key("https://forge.example/o/r"),
        url_key("https://forge.example/o/r/"),
        url_key("git@forge.example:o/r.git"),
        url_key("ssh://git@forge.example/o/r.git"),
        url_key("https://bob:secret@forge.example/o/r.git"),
    }
    assert keys == {"forge.example/o/r"}
    assert url_key("http://127.0.0.1:3000/org/service.git") == "127.0.0.1:3000/org/service"
    assert url_key("/srv/git/infra.git") == "/srv/git/infra"
    assert url_key("https://forge.example/o/r2") != url_key("https://forge.example/o/r")


def test_public_url_hides_passwords() -> None:
    assert public_url("https://bob:tok3n@forge.example/o/r.git") == "https://bob:***@forge.example/o/r.git"
    assert public_url("https://forge.example/o/r.git") == "https://forge.example/o/r.git"
    assert public_url("git@forge.example:o/r.git") == "git@forge.example:o/r.git"
